"""Merge the per-model clip probabilities of CV runs and score ensembles of every size.

``python -m tools.train --cv --seeds-cv N --save-probs F.npz`` keeps each model's clip probabilities per
fold and test set. Runs with disjoint seeds (e.g. ``--seed 1`` and ``--seed 6`` with 5 models each)
merge into the CV of one ensemble of all their models: the same seeds, folds and test clips as one
run with ``--seeds-cv 10``, at half the wall time when the two halves run side by side. Runs of the
same seeds on different folds (``--folds 1`` and ``--folds 2,3``) merge into one CV too: each file
names its folds (files written before it did take them after a colon, ``runs/f23.npz:2,3``).

    python -m tools.cv_members runs/a.npz runs/b.npz [--json out.json]
    python -m tools.cv_members runs/f1.npz runs/f23.npz runs/f45.npz

A CV of a head per corpus (``--heads corpus``) saves every head's probabilities too; ``--head-weights
ravdess=0.75,emodb=0.25`` scores the mix those weights would ship, without training again.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from tools.training.protocols import FOLDS, set_name
from tools.training.recipe import split_weight
from tools.training.reports import plot_confusion, pooled_metrics
from tools.training.windows import clip_labels


def recipes(paths: list[str]) -> list[dict]:
    """The distinct recipes of the runs (one when the runs are halves of one ensemble)."""
    out: list[dict] = []
    for arg in paths:
        z = np.load(_path_and_folds(arg)[0])
        r = json.loads(str(z["recipe"])) if "recipe" in z.files else {}
        if r not in out:
            out.append(r)
    return out


def _path_and_folds(arg: str) -> tuple[str, list[int] | None]:
    """``runs/f23.npz:2,3`` -> (path, [2, 3]); a plain path -> (path, None)."""
    path, sep, folds = arg.rpartition(":")
    if sep and folds and all(x.strip().isdigit() for x in folds.split(",")):
        return path, [int(x) for x in folds.split(",")]
    return arg, None


def load(paths: list[str]) -> tuple[dict[str, np.ndarray], dict[int, np.ndarray], list[int]]:
    """Members stacked over runs: {"set/fold": (models, clips, classes)}, {fold: labels}, seeds.

    Folds are the CV's fold numbers minus one. The same seed may come from runs of different recipes
    (other members), or from runs of other folds, never twice for one fold from one recipe.
    """
    probs: dict[str, list] = {}
    ys: dict[int, np.ndarray] = {}
    fold_seeds: dict[int, list[int]] = {}
    seen: set[tuple[str, int, int]] = set()
    for arg in paths:
        p, given = _path_and_folds(arg)
        z = np.load(p)
        run_seeds = [int(s) for s in z["seeds"]]
        rcp = str(z["recipe"]) if "recipe" in z.files else ""
        local = sorted(int(k[2:]) for k in z.files if k.startswith("y/"))
        stored = [int(f) for f in z["folds"]] if "folds" in z.files else None
        numbers = stored or given or [i + 1 for i in local]
        if len(numbers) != len(local):
            raise ValueError(f"{p} holds {len(local)} folds, not {len(numbers)}")
        to_fold = {i: n - 1 for i, n in zip(local, numbers)}
        again = sorted({s for s in run_seeds for f in to_fold.values() if (rcp, s, f) in seen})
        if again:
            raise ValueError(f"{p} repeats seeds {again} of the same recipe")
        seen |= {(rcp, s, f) for s in run_seeds for f in to_fold.values()}
        for f in to_fold.values():
            fold_seeds.setdefault(f, []).extend(run_seeds)
        for k in z.files:
            if k.startswith("y/"):
                fi = to_fold[int(k[2:])]
                if fi in ys and not np.array_equal(ys[fi], z[k]):
                    raise ValueError(f"{p} has other test clips in fold {fi + 1}")
                ys[fi] = z[k]
            elif "/" in k:
                v, _, i = k.rpartition("/")
                probs.setdefault(f"{v}/{to_fold[int(i)]}", []).append(z[k])
    out = {k: np.concatenate(v) for k, v in probs.items()}
    if len({len(v) for v in fold_seeds.values()}) > 1:
        raise ValueError("the runs give the folds different numbers of models "
                         f"({', '.join(f'fold {f + 1}: {len(v)}' for f, v in sorted(fold_seeds.items()))})")
    return out, ys, fold_seeds[min(fold_seeds)]


def only_seeds(probs: dict[str, np.ndarray], seeds: list[int], keep: list[int]) -> tuple[dict[str, np.ndarray], list[int]]:
    """The members of ``keep``'s seeds only (e.g. seeds 1-3 of a 5-network CV, to set beside a 3-network run)."""
    missing = sorted(set(keep) - set(seeds))
    if missing:
        raise ValueError(f"the runs have no models of seeds {missing} (they have {seeds})")
    idx = [i for i, s in enumerate(seeds) if s in keep]
    return {k: v[idx] for k, v in probs.items()}, [seeds[i] for i in idx]


def mix_heads(probs: dict[str, np.ndarray], weights: dict[str, float]) -> dict[str, np.ndarray]:
    """Each test set's members as the heads' mix with ``weights`` ({corpus: w}, normalised to sum 1) in
    place of the saved mix; only the sets the heads were scored on stay."""
    total = sum(weights.values())
    if total <= 0 or any(w < 0 for w in weights.values()):
        raise ValueError("head weights are >= 0 and not all 0")
    out = {}
    for k in probs:
        v, _, fold = k.rpartition("/")
        if "#" in v:
            continue
        parts = [(w / total, probs.get(f"{v}#{c}/{fold}")) for c, w in weights.items() if w > 0]
        if any(p is None for _, p in parts):
            continue
        out[k] = sum(w * p for w, p in parts)
    if not out:
        raise ValueError(f"the runs hold no head probabilities of {', '.join(weights)} (a --heads corpus CV saves them)")
    return out


def combine(p: np.ndarray, geometric: bool = False) -> np.ndarray:
    """Members' clip probabilities [models, clips, labels] -> the ensemble's: their mean, or with
    ``geometric`` the mean of their logs (a label's order is all a clip's label needs)."""
    return np.log(np.maximum(p, 1e-12)).mean(0) if geometric else p.mean(0)


def score(probs: dict[str, np.ndarray], ys: dict[int, np.ndarray], members: np.ndarray,
          geometric: bool = False) -> dict:
    """Pooled metrics per test set of the ensemble averaging ``members`` (indices into the models)."""
    folds = sorted(ys)
    first = f"/{folds[0]}"
    sets = [k[: -len(first)] for k in probs if k.endswith(first)]
    return {set_name(v): pooled_metrics([ys[fi] for fi in folds],
                                        [clip_labels(combine(probs[f"{v}/{fi}"][members], geometric)) for fi in folds])
            for v in sets}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help=".npz files from python -m tools.train --cv --save-probs")
    ap.add_argument("--draws", type=int, default=20, help="random subsets averaged per ensemble size")
    ap.add_argument("--geometric", action="store_true",
                    help="average the models' log-probabilities instead of their probabilities (the shipped graph "
                         "averages probabilities)")
    ap.add_argument("--seeds", default=None, help="only the models of these seeds, e.g. 1,2,3")
    ap.add_argument("--head-weights", default=None, metavar="CORPUS=W,...",
                    help="score the mix of a --heads corpus CV's heads with these weights, e.g. ravdess=0.75,emodb=0.25")
    ap.add_argument("--json", default=None, help="write the full ensemble's metrics here (a CV report: "
                    "python -m tools.train --refresh-meta reads it as reports/cv_<model>.json)")
    ap.add_argument("--plots", default=None, help="write the full ensemble's confusion-matrix PNGs here")
    ap.add_argument("--name", default="ensemble", help="name in the plots' file names and titles")
    args = ap.parse_args(argv)
    try:
        probs, ys, seeds = load(args.runs)
        if args.seeds:
            probs, seeds = only_seeds(probs, seeds, [int(x) for x in args.seeds.split(",")])
        if args.head_weights:
            pairs = [split_weight(e) for e in args.head_weights.split(",")]
            if any(not c or w is None for c, w in pairs):
                raise ValueError(f"head weights are CORPUS=W,... (W >= 0), not {args.head_weights!r}")
            probs = mix_heads(probs, dict(pairs))
    except (OSError, ValueError, KeyError) as exc:
        print(f"cv_members: error: {exc}", file=sys.stderr)
        return 2
    n = len(seeds)
    rng = np.random.default_rng(0)
    print(f"{n} models (seeds {seeds} of {len(args.runs)} runs), {sum(len(y) for y in ys.values())} test clips")
    print("size  clean_16k (mean of random subsets)  mulaw_8k")
    by_size = []
    for k in range(1, n + 1):
        draws = [np.arange(n)] if k == n else [rng.choice(n, k, replace=False) for _ in range(args.draws)]
        r = [score(probs, ys, d, args.geometric) for d in draws]
        by_size.append({"models": k, **{v: round(float(np.mean([x[v]["accuracy"] for x in r])), 4)
                                        for v in ("clean_16k", "mulaw_8k") if v in r[0]}})
        print(f"{k:4d}  " + "".join(f"{by_size[-1].get(v, float('nan')):.4f}".ljust(36)
                                             for v in ("clean_16k", "mulaw_8k")).rstrip())
    full = score(probs, ys, np.arange(n), args.geometric)
    print(json.dumps({k: {"accuracy": v["accuracy"], "macro_f1": v["macro_f1"]} for k, v in full.items()}))
    if args.json:
        rs = recipes(args.runs)
        out = {"command": "python -m tools.cv_members " + " ".join(argv if argv is not None else sys.argv[1:]),
               "protocol": f"{len(ys)}-fold actor-grouped CV, 4 actors a fold: {FOLDS[:len(ys)]}",
               "seeds": seeds, "seeds_cv": n, "accuracy_by_ensemble_size": by_size, **full}
        if len(rs) == 1:
            out["recipe"] = rs[0]
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    if args.plots:
        Path(args.plots).mkdir(parents=True, exist_ok=True)
        for key, label in (("clean_16k", "16 kHz"), ("mulaw_8k", "8 kHz mu-law")):
            if key not in full:
                continue
            r = full[key]
            plot_confusion(r["confusion"], f"{args.name}: CV {label}, {n} models, acc {r['accuracy']:.3f}, "
                           f"macro-F1 {r['macro_f1']:.3f}", Path(args.plots) / f"confusion_{args.name}_{key}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
