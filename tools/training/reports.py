"""Report figures: accuracy, macro-F1, recall, confusion, the prediction histogram, calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tools.datasets import LABELS

__all__ = ["metrics", "confusion_metrics", "pooled_metrics", "histogram", "ece", "fit_temperature", "calibrate", "plot_confusion"]


def metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Accuracy, macro-F1, recall per label, confusion and the prediction histogram.

    A prediction of -1 (a clip without speech windows: no label) counts as wrong and is counted in
    ``no_label``; it has no column in the confusion matrix.
    """
    n = len(LABELS)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    cm = np.zeros((n, n), dtype=int)
    for t, p in zip(y_true, y_pred):
        if p >= 0:
            cm[t, p] += 1
    return confusion_metrics(cm, np.bincount(y_true, minlength=n), int(np.sum(y_pred < 0)))


def confusion_metrics(cm: np.ndarray, support: np.ndarray, no_label: int = 0) -> dict:
    """:func:`metrics` from a confusion matrix and the clips per true label (unlabelled clips included).

    The form that reports of disjoint folds add up in (``tools/cv_merge.py``).
    """
    n = len(LABELS)
    cm, support = np.asarray(cm, dtype=int), np.asarray(support, dtype=int)
    rec = np.diag(cm) / np.maximum(support, 1)
    prec = np.diag(cm) / np.maximum(cm.sum(0), 1)
    f1 = np.where(rec + prec > 0, 2 * rec * prec / np.maximum(rec + prec, 1e-12), 0.0)
    present = support > 0
    labelled = cm.sum(0)
    total = int(support.sum())
    return {
        "accuracy": round(float(np.trace(cm) / max(total, 1)), 4),
        "macro_f1": round(float(f1.mean()), 4),
        "macro_f1_present": round(float(f1[present].mean()), 4) if present.any() else 0.0,
        "recall": {LABELS[k]: round(float(rec[k]), 4) for k in range(n)},
        "confusion": cm.tolist(),
        "predicted": {LABELS[k]: round(float(labelled[k] / max(labelled.sum(), 1)), 4) for k in range(n)},
        "no_label": int(no_label),
        "n": total,
    }


def histogram(y_pred: np.ndarray) -> dict[str, float]:
    """Share of the predictions that each label takes (labelled predictions only)."""
    y_pred = np.asarray(y_pred)
    y_pred = y_pred[y_pred >= 0]
    c = np.bincount(y_pred, minlength=len(LABELS)) / max(len(y_pred), 1)
    return {LABELS[k]: round(float(c[k]), 4) for k in range(len(LABELS))}


def pooled_metrics(ys: list[np.ndarray], preds: list[np.ndarray]) -> dict:
    """Metrics over all folds' clips together, plus each fold's accuracy and their spread."""
    out = metrics(np.concatenate(ys), np.concatenate(preds))
    accs = [round(float(np.mean(p == y)), 4) for y, p in zip(ys, preds)]
    out["fold_accuracy"] = accs
    out["fold_std"] = round(float(np.std(accs)), 4)
    return out


def ece(P: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: |accuracy - confidence| per confidence bin, weighted by the bin's share."""
    P, y = np.asarray(P, np.float64), np.asarray(y)
    ok = ~np.isnan(P).any(axis=1)
    P, y = P[ok], y[ok]
    if len(y) == 0:
        return float("nan")
    conf, pred = P.max(1), P.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    e = 0.0
    for a, b in zip(edges[:-1], edges[1:]):
        m = (conf > a) & (conf <= b)
        if m.any():
            e += m.mean() * abs(np.mean(pred[m] == y[m]) - conf[m].mean())
    return float(e)


def calibrate(P: np.ndarray, t: float) -> np.ndarray:
    """Probabilities with temperature ``t`` applied, as the shipped classifier applies it."""
    from streamer.classifier import calibrated

    return calibrated(np.asarray(P, np.float64), float(t)).astype(np.float64)


def fit_temperature(P: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of labels ``y`` (a grid, then refined)."""
    P, y = np.asarray(P, np.float64), np.asarray(y)
    ok = ~np.isnan(P).any(axis=1)
    P, y = P[ok], y[ok]

    def nll(t: float) -> float:
        return float(-np.mean(np.log(calibrate(P, t)[np.arange(len(y)), y] + 1e-12)))

    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 61))
    t = float(grid[int(np.argmin([nll(g) for g in grid]))])
    for step in (1.05, 1.01):
        cand = [t / step, t, t * step]
        t = float(cand[int(np.argmin([nll(c) for c in cand]))])
    return t


def plot_confusion(cm, title: str, path: Path) -> None:
    """A row-normalised confusion matrix as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=90)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(cm)):
        for j in range(len(cm)):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(LABELS)), LABELS, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(LABELS)), LABELS, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
