"""Evaluate a shipped .tflite model on any labelled corpus, and summarise CV reports.

    python tools/evaluate.py model/emotion.tflite --data DIR [--corpus ravdess|tess|crema|savee|emodb] [--telephone]
    python tools/evaluate.py --summary            # markdown table of model/reports/cv_*.json

Each file is classified as ``emostream classify`` does: the streamer's windows of the clip streamed
alone, normalised with the model's running normaliser, probabilities averaged over speech windows.
Labels a corpus lacks (e.g. calm outside RAVDESS) still compete in the prediction; recall is reported
for the labels present.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def evaluate(model_path: str, data: str, corpus: str | None = None, telephone: bool = False, limit: int = 0) -> dict:
    from streamer.config import load_meta
    from streamer.features import frame_features
    from streamer.gate import SpeechGate
    from tools.augment import telephone as tel
    from tools.convert import Interpreter, tflite_predict
    from tools.datasets import load_audio, ravdess_items, scan
    from tools.train import metrics, predict_clips, stream_windows

    meta = load_meta(model_path)
    cfg = meta.features
    items = ravdess_items(data) if corpus == "ravdess" else scan(data, corpus)
    if limit:
        items = items[:limit]
    if not items:
        raise SystemExit(f"no labelled recordings under {data}")
    interp = Interpreter(model_path=model_path)
    interp.allocate_tensors()
    wins = []
    for it in items:
        y = load_audio(it.path, cfg.sample_rate)
        if telephone:
            y = tel(y, cfg.sample_rate)
        m, lv = frame_features(y, cfg)
        wins.append(stream_windows(m, SpeechGate(meta.gate, cfg)(lv), cfg, meta.normalisation))
    keep = [i for i, (w, _) in enumerate(wins) if w]
    P = predict_clips(lambda X: tflite_predict(interp, X), [wins[i] for i in keep], meta.input_layout,
                      meta.gate.min_fraction)
    y_true = np.array([meta.labels.index(items[i].label) for i in keep])
    res = metrics(y_true, P.argmax(1))
    present = sorted(set(items[i].label for i in keep))
    res["recall"] = {k: v for k, v in res["recall"].items() if k in present}
    res["macro_f1_present"] = res.pop("macro_f1")  # over all 8 labels; absent ones count 0
    res["skipped_too_short"] = len(items) - len(keep)
    res["model"] = model_path
    res["data"] = data
    res["telephone"] = telephone
    return res


def summary(reports: Path) -> str:
    rows = ["| model | CV 16 kHz acc | macro-F1 | CV 8 kHz mu-law acc | macro-F1 | fold accuracies (16 kHz) | random split |",
            "|---|---|---|---|---|---|---|"]
    for p in sorted(reports.glob("cv_*.json")):
        r = json.loads(p.read_text())
        if "clean_16k" not in r:
            continue
        c, t = r["clean_16k"], r.get("mulaw_8k", {})
        rs = r.get("random_split", {}).get("clean_16k", {}).get("accuracy", "")
        rows.append(f"| {p.stem[3:]} | {c['accuracy']:.3f} | {c['macro_f1']:.3f} | {t.get('accuracy', float('nan')):.3f} | "
                    f"{t.get('macro_f1', float('nan')):.3f} | {', '.join(f'{a:.2f}' for a in c['fold_accuracy'])} | {rs} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=str(ROOT / "model" / "emotion.tflite"))
    ap.add_argument("--data")
    ap.add_argument("--corpus", choices=["ravdess", "tess", "crema", "savee", "emodb"])
    ap.add_argument("--telephone", action="store_true", help="pass every clip through 8 kHz mu-law first")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--summary", action="store_true")
    ap.add_argument("--reports", default=str(ROOT / "model" / "reports"))
    args = ap.parse_args(argv)
    if args.summary:
        print(summary(Path(args.reports)))
        return 0
    if not args.data:
        ap.error("--data is required (or --summary)")
    res = evaluate(args.model, args.data, args.corpus, args.telephone, args.limit)
    print(json.dumps({k: v for k, v in res.items() if k != "confusion"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
