"""Evaluate a shipped .tflite model on a labelled corpus, and summarise CV reports.

    python -m tools.evaluate [MODEL] --data DIR --corpus emodb [--telephone] [--json OUT]
    python -m tools.evaluate --summary            # markdown table of model/reports/cv_*.json

Each file is classified by the streamer itself, as ``emostream classify`` does
(``streamer.labelling.analyse`` and ``overall``: the file streamed through the pipeline, the mean of
its speech windows' probabilities); ``--telephone`` feeds the file as 8 kHz mu-law audio instead.
A file without speech windows has no label and counts as wrong. Labels a corpus lacks (e.g. calm
outside RAVDESS) still compete in the prediction; recall and macro-F1 are also given over the labels
present, and the prediction histogram shows whether one label swallows the others.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from tools.training.reports import metrics

__all__ = ["evaluate", "summary", "main"]

ROOT = Path(__file__).resolve().parent.parent


def evaluate(model_path: str | None, data: str | None, corpus: str, telephone: bool = False, limit: int = 0) -> dict:
    """Per-clip metrics of a model on a corpus under the data folder (``--data`` or ``$EMOSTREAM_DATA``)."""
    from streamer.labelling import analyse, load_model, overall
    from streamer.sources import ArraySource, load_audio
    from tools.continuous import Stream, telephone_8k
    from tools.datasets import corpus_items, data_root

    meta, clf = load_model(model_path)
    items = [it for it in corpus_items(data_root(data), corpus) if it.label in meta.labels]
    if limit:
        items = items[:limit]
    y_true, y_pred = [], []
    for it in items:
        if telephone:
            y, sr = load_audio(it.path, meta.features.sample_rate)
            tel = telephone_8k(Stream(it.path, y, sr, []))
            src = ArraySource(tel.audio, tel.sample_rate, uri=it.path)
        else:
            src = it.path
        label, _, _ = overall(analyse(src, meta, clf), meta.labels)
        y_true.append(meta.labels.index(it.label))
        y_pred.append(meta.labels.index(label) if label is not None else -1)
    res = metrics(np.array(y_true), np.array(y_pred))
    present = sorted(set(it.label for it in items))
    res["recall"] = {k: v for k, v in res["recall"].items() if k in present}
    res.update(model=meta.version, corpus=corpus, telephone=telephone, max_label_share=max(res["predicted"].values()))
    return res


def summary(reports: Path) -> str:
    """A markdown table of the CV reports in a folder."""
    rows = ["| report | 16 kHz acc | macro-F1 | 8 kHz mu-law acc | continuous 16k / 8k (speaker streams) | fold accuracies (16 kHz) |",
            "|---|---|---|---|---|---|"]
    for p in sorted(reports.glob("cv_*.json")):
        r = json.loads(p.read_text())
        if "clean_16k" not in r:
            continue
        c, t = r["clean_16k"], r.get("mulaw_8k", {})
        cont = " / ".join(f"{r[k]['speaker_timeline']:.3f}" for k in ("continuous_16k", "continuous_mulaw_8k")
                          if k in r and "speaker_timeline" in r[k])
        rows.append(f"| {p.stem[3:]} | {c['accuracy']:.3f} | {c.get('macro_f1', float('nan')):.3f} | {t.get('accuracy', float('nan')):.3f} | "
                    f"{cont} | {', '.join(f'{a:.2f}' for a in c.get('fold_accuracy', []))} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=None, help="a .tflite model (default: the shipped one)")
    ap.add_argument("--data", default=None, help="folder holding the corpora (default: $EMOSTREAM_DATA)")
    ap.add_argument("--corpus", choices=["ravdess", "emodb"], default="emodb")
    ap.add_argument("--telephone", action="store_true", help="feed every clip as 8 kHz mu-law audio")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the result here")
    ap.add_argument("--summary", action="store_true")
    ap.add_argument("--reports", default=str(ROOT / "model" / "reports"))
    args = ap.parse_args(argv)
    if args.summary:
        print(summary(Path(args.reports)))
        return 0
    from streamer.errors import EmostreamError
    from tools.datasets import DataError

    try:
        res = evaluate(args.model, args.data, args.corpus, args.telephone, args.limit)
        res["command"] = "python -m tools.evaluate " + " ".join(argv if argv is not None else sys.argv[1:])
    except (EmostreamError, DataError) as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in res.items() if k != "confusion"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
