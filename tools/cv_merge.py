"""Merge CV reports of disjoint folds of one recipe into the report of the whole CV.

``python -m tools.train --cv --folds 1,2`` and ``--folds 3,4,5`` can run side by side (one core each)
or in different sessions; this adds their clips up into the report one ``--cv`` run would write:
per-clip figures from the summed confusion matrices, continuous-speech figures weighted by
utterances, fold lists joined. The calibration figures are the clip-weighted means of the runs' (a
temperature fitted on all folds' probabilities at once would differ slightly; the report says so).

    python -m tools.cv_merge runs/cv_default_a.json runs/cv_default_b.json --out model/reports/cv_default.json

``--timeline reset0.5`` scores every run's continuous speech with that timeline variant (runs made
before it became the streamer's default report it beside their own).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import re

from tools.training.export import CONTINUOUS_KEYS, EVAL_KEYS
from tools.training.reports import confusion_metrics

__all__ = ["merge", "as_variant", "MergeError"]

_ONLY = re.compile(r"; only folds \[[0-9, ]*\]$")  # what tools.train --folds adds to the protocol


def _with_defaults(recipe: dict | None) -> dict | None:
    """A report's recipe with the fields added since it was written at their defaults (they did not exist)."""
    if recipe is None:
        return None
    from dataclasses import MISSING, fields

    from tools.training.recipe import Recipe

    return {**{f.name: f.default for f in fields(Recipe) if f.default is not MISSING}, **recipe}


class MergeError(ValueError):
    """The reports cannot be one CV: other recipes, protocols or overlapping folds."""


def _support(entry: dict) -> np.ndarray:
    """Clips per true label: the confusion's rows, plus unlabelled clips recovered from the recall."""
    cm = np.asarray(entry["confusion"], dtype=int)
    rows = cm.sum(1)
    rec = np.array(list(entry["recall"].values()), dtype=float)
    diag = np.diag(cm)
    from_recall = np.where(rec > 0, np.rint(diag / np.where(rec > 0, rec, 1)), rows).astype(int)
    return np.maximum(rows, from_recall)


def _clips(entries: list[dict], folds: list[list[int]]) -> dict:
    cm = sum(np.asarray(e["confusion"], dtype=int) for e in entries)
    out = confusion_metrics(cm, sum(_support(e) for e in entries), sum(int(e.get("no_label", 0)) for e in entries))
    out["fold_accuracy"] = _in_fold_order(entries, folds, "fold_accuracy")
    out["fold_std"] = round(float(np.std(out["fold_accuracy"])), 4) if out["fold_accuracy"] else 0.0
    return out


def _in_fold_order(entries: list[dict], folds: list[list[int]], key: str) -> list:
    """Per-fold values of ``key`` joined in fold order (a merged report of folds 1, 2, 4, 5 may meet fold 3)."""
    return [a for _, a in sorted((n, a) for e, ns in zip(entries, folds) for n, a in zip(ns, e.get(key, [])))]


def _continuous(entries: list[dict], folds: list[list[int]]) -> dict:
    out: dict = {}
    for who in ("speaker", "mixed"):
        w = np.array([e.get(f"{who}_utterances", 0) for e in entries], dtype=float)
        out[f"{who}_utterances"] = int(w.sum())
        out[f"{who}_unlabelled"] = int(sum(e.get(f"{who}_unlabelled", 0) for e in entries))
        keys = [k for k in entries[0] if k.startswith(f"{who}_") and isinstance(entries[0][k], float)]
        for k in keys:
            if all(k in e for e in entries):
                out[k] = round(float(np.dot(w, [e[k] for e in entries]) / max(w.sum(), 1)), 4)
    if all("fold_speaker_timeline" in e for e in entries):
        out["fold_speaker_timeline"] = _in_fold_order(entries, folds, "fold_speaker_timeline")
    if all("confusion" in e for e in entries):
        m = confusion_metrics(sum(np.asarray(e["confusion"], dtype=int) for e in entries),
                              sum(_support(e) for e in entries))
        out.update(recall=m["recall"], predicted=m["predicted"], confusion=m["confusion"])
    return out


def as_variant(report: dict, variant: str) -> dict:
    """The report with timeline ``variant`` (a key of ``tools.continuous.VARIANTS``) as its timeline.

    For runs made before the variant became the streamer's default: per-fold figures and the
    confusion of the variant are not kept, so a run of several folds loses its fold list and confusion.
    """
    out = dict(report)
    for k in CONTINUOUS_KEYS:
        if k not in report:
            continue
        c = dict(report[k])
        for who in ("speaker", "mixed"):
            key = f"{who}_timeline[{variant}]"
            if key not in c:
                raise MergeError(f"a report has no {key} in {k}")
            c[f"{who}_timeline"] = c[key]
        if len(report.get("folds", [])) == 1:
            c["fold_speaker_timeline"] = [c["speaker_timeline"]]
        else:
            c.pop("fold_speaker_timeline", None)
        for drop in ("confusion", "recall", "predicted"):
            c.pop(drop, None)
        out[k] = c
    return out


def merge(reports: list[dict], timeline: str | None = None) -> dict:
    """One CV report from reports of disjoint folds of the same recipe, protocol and test corpus.

    ``timeline`` names a timeline variant to score every report's continuous speech with (see
    :func:`as_variant`).
    """
    if len(reports) < 2:
        raise MergeError("give at least two reports")
    if timeline:
        reports = [as_variant(r, timeline) for r in reports]
    first = reports[0]
    for r in reports[1:]:
        for k in ("recipe", "protocol", "test_corpus", "train_corpora", "seeds_cv"):
            a, b = r.get(k), first.get(k)
            if k == "protocol":
                a, b = _ONLY.sub("", a or ""), _ONLY.sub("", b or "")
            elif k == "recipe":
                a, b = _with_defaults(a), _with_defaults(b)
            if a != b:
                raise MergeError(f"the reports differ in {k}: not one CV")
    folds = sorted((f for r in reports for f in r["folds"]), key=lambda f: f["fold"])
    numbers = [f["fold"] for f in folds]
    if len(set(numbers)) != len(numbers):
        raise MergeError(f"fold(s) {sorted({n for n in numbers if numbers.count(n) > 1})} appear in two reports")
    order = sorted(range(len(reports)), key=lambda i: min(f["fold"] for f in reports[i]["folds"]))
    reports = [reports[i] for i in order]
    out = {k: first[k] for k in ("protocol", "test_corpus", "train_corpora") if k in first}
    out["protocol"] = _ONLY.sub("", out.get("protocol", ""))
    total = re.match(r"(\d+)-fold", out["protocol"])  # folds 1 and 2 of five are not the whole CV
    if numbers != list(range(1, (int(total.group(1)) if total else len(numbers)) + 1)):
        out["protocol"] += f"; only folds {numbers}"
    out["folds"] = folds
    for k in EVAL_KEYS:
        if all(k in r for r in reports):
            out[k] = _clips([r[k] for r in reports], [[f["fold"] for f in r["folds"]] for r in reports])
    for k in CONTINUOUS_KEYS:
        if all(k in r for r in reports):
            out[k] = _continuous([r[k] for r in reports], [[f["fold"] for f in r["folds"]] for r in reports])
    cal = [r.get("calibration_clean_16k") for r in reports]
    if all(cal):
        w = np.array([r["clean_16k"]["n"] for r in reports], dtype=float)
        out["calibration_clean_16k"] = {
            k: round(float(np.dot(w, [c[k] for c in cal]) / w.sum()), 4) for k in cal[0] if all(k in c for c in cal)}
        out["calibration_clean_16k"]["merged"] = "clip-weighted mean of the runs' figures"
    if timeline:
        out["timeline_variant"] = timeline
    out["run_commands"] = [r.get("command") for r in reports]
    out["command"] = "python -m tools.cv_merge " + " ".join(f"<{c}>" for c in out["run_commands"])
    out["seeds_cv"] = first.get("seeds_cv")
    out["recipe"] = first.get("recipe")
    out["seconds"] = round(sum(float(r.get("seconds", 0)) for r in reports))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Merge CV reports of disjoint folds into one CV report.")
    ap.add_argument("reports", nargs="+", help="cv_*.json reports of tools.train --cv --folds ...")
    ap.add_argument("--out", required=True, help="merged report to write")
    ap.add_argument("--timeline", default=None, metavar="VARIANT",
                    help="score continuous speech with this timeline variant (e.g. reset0.5) in every report")
    args = ap.parse_args(argv)
    try:
        reports = [json.loads(Path(p).read_text(encoding="utf-8")) for p in args.reports]
        merged = merge(reports, args.timeline)
    except (OSError, ValueError, KeyError) as e:  # json.JSONDecodeError and MergeError are ValueErrors
        print(f"cv_merge: error: {e}", file=sys.stderr)
        return 2
    Path(args.out).write_text(json.dumps(merged, indent=1) + "\n", encoding="utf-8")
    summary = {k: merged[k]["accuracy"] for k in EVAL_KEYS if k in merged}
    summary.update({k: merged[k].get("speaker_timeline") for k in CONTINUOUS_KEYS if k in merged})
    print(json.dumps({"folds": [f["fold"] for f in merged["folds"]], **summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
