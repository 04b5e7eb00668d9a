"""Recall per label of a saved CV, split by what the corpus says of each clip (RAVDESS: intensity, sex,
statement; any corpus: speaker), and what the misses were heard as.

``python -m tools.train --cv --save-probs F.npz`` keeps each model's clip probabilities per fold; this
finds which clips they were (the corpus's files in the CV's fold order) and splits the ensemble's recall:

    python -m tools.cv_breakdown runs/f123.npz runs/f45.npz --by intensity [--set clean] [--seeds 1,2,3]

The data folder (``--data`` or ``$EMOSTREAM_DATA``) must hold the corpora the runs trained on: the clips of
a fold are found the way the CV found them, and their labels must match the saved ones.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from tools.cv_members import combine, load, only_seeds, recipes
from tools.datasets import LABELS, DataError, Item
from tools.training.protocols import folds_of
from tools.training.windows import clip_labels

__all__ = ["fold_items", "breakdown", "group_of"]


def fold_items(items: list[Item], corpus: str) -> dict[int, list[Item]]:
    """{fold index from 0: the test clips of that fold, in the order the CV scored them}."""
    data = SimpleNamespace(speaker=np.array([it.speaker for it in items]),
                           corpus=np.array([it.corpus for it in items]))
    data.where = lambda c: np.flatnonzero(data.corpus == c)
    return {fi: [items[i] for i in np.flatnonzero(np.isin(data.speaker, test))]
            for fi, test in enumerate(folds_of(data, corpus))}


def group_of(item: Item, key: str) -> str:
    """The value of ``key`` for one clip: ``speaker``, ``corpus``, or a field of its metadata."""
    if key in ("speaker", "corpus"):
        return str(getattr(item, key))
    value = item.get(key)
    return "?" if value is None else str(value)


def breakdown(preds: dict[int, np.ndarray], ys: dict[int, np.ndarray], clips: dict[int, list[Item]],
              key: str) -> dict[str, dict[str, dict]]:
    """{label: {group: {"right", "n", "recall", "heard_as": {label: count} of the misses}}}.

    Raises:
        ValueError: a fold's saved labels are not its clips' (another corpus, or other data).
    """
    out: dict[str, dict[str, dict]] = {}
    tally: dict[tuple[str, str], Counter] = {}
    for fi in sorted(preds):
        its = clips.get(fi, [])
        truth = np.array([LABELS.index(it.label) for it in its])
        if len(truth) != len(ys[fi]) or not np.array_equal(truth, ys[fi]):
            raise ValueError(f"fold {fi + 1}: the saved labels are not those of this corpus's clips "
                             f"({len(ys[fi])} saved, {len(truth)} clips found)")
        for it, y, p in zip(its, ys[fi], preds[fi]):
            c = tally.setdefault((LABELS[y], group_of(it, key)), Counter())
            c["n"] += 1
            c["right"] += int(p == y)
            if p != y:
                c[LABELS[p] if p >= 0 else "no speech"] += 1
    for (label, group), c in sorted(tally.items(), key=lambda kv: (LABELS.index(kv[0][0]), kv[0][1])):
        heard = {k: v for k, v in c.most_common() if k not in ("n", "right")}
        out.setdefault(label, {})[group] = {"right": c["right"], "n": c["n"],
                                            "recall": round(c["right"] / c["n"], 4), "heard_as": heard}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help=".npz files from python -m tools.train --cv --save-probs")
    ap.add_argument("--by", default="intensity", help="what to split by: speaker, or a metadata field "
                    "(RAVDESS: intensity, sex, statement, repetition)")
    ap.add_argument("--set", default="clean", help="the saved test set (clean, tel, codec, clean_spk, ...)")
    ap.add_argument("--seeds", default=None, help="only the models of these seeds, e.g. 1,2,3")
    ap.add_argument("--corpus", default="ravdess", help="the corpus the CV held speakers out of")
    ap.add_argument("--data", default=None, help="folder holding the corpora (default: $EMOSTREAM_DATA)")
    ap.add_argument("--json", default=None, help="write the breakdown here")
    args = ap.parse_args(argv)
    from tools.training.data import load_corpora

    try:
        probs, ys, seeds = load(args.runs)
        if args.seeds:
            probs, seeds = only_seeds(probs, seeds, [int(x) for x in args.seeds.split(",")])
        corpora = [r.get("corpora") or ["ravdess"] for r in recipes(args.runs)]
        if any(c != corpora[0] for c in corpora):
            raise ValueError("the runs trained on different corpora")
        missing = [fi + 1 for fi in ys if f"{args.set}/{fi}" not in probs]
        if missing:
            raise ValueError(f"no saved test set {args.set!r} in folds {missing}")
        preds = {fi: clip_labels(combine(probs[f"{args.set}/{fi}"])) for fi in ys}
        result = breakdown(preds, ys, fold_items(load_corpora(args.data, corpora[0]), args.corpus), args.by)
    except (OSError, ValueError, KeyError, DataError) as exc:
        print(f"cv_breakdown: error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(seeds)} models (seeds {seeds}), set {args.set}, recall by {args.by}")
    for label, groups in result.items():
        parts = []
        for g, r in groups.items():
            top = ", ".join(f"{k} {v}" for k, v in list(r["heard_as"].items())[:2])
            parts.append(f"{g} {r['right']}/{r['n']} {r['recall']:.2f}" + (f" (missed as {top})" if top else ""))
        print(f"  {label:9s} " + "; ".join(parts))
    if args.json:
        out = {"command": "python -m tools.cv_breakdown " + " ".join(argv if argv is not None else sys.argv[1:]),
               "seeds": seeds, "set": args.set, "by": args.by, "recall": result}
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
