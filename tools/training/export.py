"""The final fit and what ships: .tflite + emotion.json with the recipe, provenance and evaluation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamer.config import ModelMeta
from tools.datasets import LABELS
from tools.training.data import CITATIONS
from tools.training.loop import fit
from tools.training.network import ensemble, members_of
from tools.training.recipe import Recipe, RecipeError
from tools.training.windows import eval_windows, fold_norm, to_layout, training_meta

__all__ = ["FitOptions", "final_fit", "eval_summary", "describe", "refresh_meta", "model_stem", "EVAL_KEYS"]

#: report entries copied into the metadata's ``evaluation`` block (when the report has them)
EVAL_KEYS = ("clean_16k", "mulaw_8k", "speaker_clean_16k", "speaker_mulaw_8k", "codec_16k")
CONTINUOUS_KEYS = ("continuous_16k", "continuous_mulaw_8k")


@dataclass
class FitOptions:
    """Where and how the final fit writes the model."""

    out: str
    reports: str
    version: str = "1.0.0"
    seed: int = 1
    seeds: int | None = None  # ensemble size (default: the recipe's)
    quant: str = "dynamic"
    command: str = ""


def model_stem(rcp: Recipe) -> str:
    """File stem of a recipe's model: ``emotion`` for the shipped recipes, else the recipe's name."""
    return "seed" if rcp.name == "seed" else "emotion"


def _speakers(data, idx) -> str:
    parts = []
    for c in sorted(set(data.corpus[idx].tolist())):
        spk = sorted({s.split("-")[-1] for s in data.speaker[idx][data.corpus[idx] == c]})
        n = int(np.sum(data.corpus[idx] == c))
        parts.append(f"{c} speakers {spk[0]}-{spk[-1]} ({len(spk)} speakers, {n} clips)")
    return "; ".join(parts)


def final_fit(data, rcp: Recipe, opts: FitOptions, log=print):
    """Fit on every clip (seed: early stopping on the last 4 speakers) and write .tflite + .json."""
    from tools.convert import agreement, latency_ms, to_tflite

    all_idx = np.arange(len(data.items))
    val = None
    tr = all_idx
    if rcp.early_stopping:
        hold = sorted(set(data.speaker.tolist()))[-4:]
        val = np.flatnonzero(np.isin(data.speaker, hold))
        tr = np.flatnonzero(~np.isin(data.speaker, hold))
    ncfg = fold_norm(data, rcp, tr)
    models, infos = [], []
    n_seeds = opts.seeds or rcp.seeds
    for s, view in members_of(rcp, n_seeds):
        log(f"final fit, seed {opts.seed + s}, view {view}")
        m, info = fit(data, tr, rcp, ncfg, seed=opts.seed + s, val=val, log=log, view=view)
        models.append(m)
        infos.append(info)
    model = ensemble(models)
    cfg = rcp.features
    content = to_tflite(model, quant=opts.quant)
    # agreement on real windows (about 200 clips' streamer windows)
    wins = eval_windows(data, all_idx[:: max(1, len(all_idx) // 200)], "clean", training_meta(rcp, ncfg))
    full = [f for ws in wins for w in ws for f in w.feats if len(f) == cfg.window_steps]
    X = to_layout(np.stack(full), rcp.input_layout)
    agree = agreement(model, content, X)
    steps_shape = (1, cfg.window_steps, cfg.n_channels)
    shape = steps_shape if rcp.input_layout == "steps" else (1, cfg.n_channels * cfg.window_steps, 1)
    lat = latency_ms(content, shape)
    log(f"tflite: {len(content)} bytes, {lat:.3f} ms/window, agreement {agree}")
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = model_stem(rcp)
    tfl = out / f"{stem}.tflite"
    cv_path = Path(opts.reports) / f"cv_{rcp.name}.json"
    cv = json.loads(cv_path.read_text()) if cv_path.exists() else None
    prev = _previous_meta(out, stem, log)
    # blocks other parts of the project own survive a refit: the speech detector's (``speech``, or
    # ``gate.detector`` with its own model file beside this one)
    keep = {k: prev[k] for k in ("speech",) if k in prev}
    corpora = sorted(set(data.corpus[tr].tolist()))
    meta = ModelMeta(
        name=f"emostream-{rcp.name}",
        version=opts.version,
        labels=list(LABELS),
        features=cfg,
        gate=rcp.gate,
        normalisation=ncfg,
        input_layout=rcp.input_layout,
        temperature=cv_temperature(cv),
        extra={
            **keep,
            "description": describe(rcp),
            "training": {
                "data": _speakers(data, tr),
                "attribution": " / ".join(CITATIONS[c] for c in corpora),
                "license": "CC BY-NC-SA 4.0" if "ravdess" in corpora else "research use",
                "command": opts.command or f"python -m tools.train --model {rcp.name}",
                "recipe": rcp.to_json(),
                "seeds": [opts.seed + s for s in range(n_seeds)],
                "runs": [{k: v for k, v in i.items() if k != "curve"} for i in infos],
                "early_stopping_speakers": sorted(set(data.speaker[val].tolist())) if val is not None else None,
                "quantisation": "int8 dynamic-range weights" if opts.quant == "dynamic" else "float32",
            },
            "evaluation": eval_summary(cv, rcp, Path(opts.reports), opts.version),
            "tflite": {"bytes": len(content), "ms_per_window_1_thread": round(lat, 4),
                       "keras_agreement": agree, "input": "[batch, steps, n_channels], steps dynamic"
                       if rcp.input_layout == "steps" else "[batch, n_channels*steps, 1]"},
        },
    )
    d = meta.to_dict()
    for k, v in (prev.get("gate") or {}).items():
        d["gate"].setdefault(k, v)
    tfl.write_bytes(content)
    (out / f"{stem}.json").write_text(json.dumps(d, indent=1) + "\n")
    log(f"wrote {tfl} and {out / (stem + '.json')}")
    return model


SHIPPED = Path(__file__).resolve().parents[2] / "model"


def _previous_meta(out: Path, stem: str, log=print) -> dict:
    """The metadata a refit keeps blocks of: ``out``'s own, or else the shipped model's.

    A fit into a fresh folder would otherwise ship without the speech detector (``gate.detector``):
    the shipped one is taken, and its model file copied beside the new one.
    """
    old = out / f"{stem}.json"
    if old.exists():
        return json.loads(old.read_text())
    shipped = SHIPPED / f"{stem}.json"
    if not shipped.exists() or out.resolve() == SHIPPED:
        return {}
    prev = json.loads(shipped.read_text())
    det = (prev.get("gate") or {}).get("detector") or {}
    if det.get("model"):
        src, dst = SHIPPED / det["model"], out / det["model"]
        if src.exists() and not dst.exists():
            dst.write_bytes(src.read_bytes())
    log(f"{out} held no {stem}.json: the speech detector and gate come from the shipped {shipped}")
    return prev


def describe(rcp: Recipe) -> str:
    """One sentence on the model's inputs, network and training."""
    if rcp.arch == "seed":
        return ("Seed baseline: 40 MFCC means of the whole 3 s window, Conv1D 128/5 -> ReLU -> Dropout .1 -> "
                "MaxPool 8 -> Conv1D 128/5 -> ReLU -> Dropout .1 -> Flatten -> Dense 8 softmax; RMSprop 5e-5, batch 16.")
    blocks = ",".join(f"{f}x{k}" for f, k in rcp.blocks)
    f = rcp.features
    pitch = " + log-f0 and voicing" if f.pitch else ""
    n = rcp.seeds * len(rcp.views)
    return (f"1-D CNN over per-frame MFCCs{pitch} ({1000 * f.hop_length / f.sample_rate:g} ms steps, "
            f"{f.n_fft}-point FFT, {f.window_s:g} s windows, dynamic time axis): "
            f"{len(rcp.blocks)} Conv1D blocks ({blocks}) + BatchNorm + ReLU + MaxPool 2, "
            f"average+max pooling, Dense {rcp.dense}, Dense 8 softmax; {rcp.norm} per-stream "
            f"normalisation; trained on {' + '.join(rcp.corpora)} with {len(rcp.train_versions)} augmented copies "
            "of each clip, time shift and masks; "
            f"average of {n} networks"
            + (f" ({rcp.seeds} seeds, each once on all channels and once on the MFCCs alone)"
               if len(rcp.views) > 1 else "") + ".")


def _continuous_entry(c: dict) -> dict:
    """A continuous-speech result as an evaluation entry: ``accuracy`` is the timeline's per utterance
    on single-speaker streams (what ``emostream info`` prints), the rest beside it."""
    out = {"accuracy": c.get("speaker_timeline")}
    for k, name in (("mixed_timeline", "mixed_speakers"), ("speaker_raw", "raw_windows"),
                    ("speaker_utterances", "utterances"), ("fold_speaker_timeline", "fold_accuracy"),
                    ("predicted", "predicted")):
        if k in c:
            out[name] = c[k]
    return out


def eval_summary(cv: dict | None, rcp: Recipe, reports: Path | None = None, version: str | None = None) -> dict:
    """The metadata's ``evaluation`` block from the recipe's CV report and its other protocols' reports.

    Entries with an ``accuracy`` are test conditions (``emostream info`` prints each one):
    per-clip sets (``clean_16k``, ``mulaw_8k``, ...), continuous speech (``continuous_16k``,
    ``continuous_mulaw_8k``), and from ``cv_<recipe>__<protocol>.json`` reports (written by
    ``--cv CORPUS`` and ``--cross A:B``) ``<protocol>_16k`` / ``_mulaw_8k`` / ``_continuous_16k``.
    """
    if not cv:
        return {"protocol": f"none recorded: run python -m tools.train --model {rcp.name} --cv"}
    out = {"protocol": cv.get("protocol"), "command": cv.get("command")}
    for k in EVAL_KEYS:
        if k in cv:
            out[k] = {kk: cv[k][kk] for kk in ("accuracy", "macro_f1", "recall", "fold_accuracy", "fold_std",
                                                "predicted") if kk in cv[k]}
    for k in CONTINUOUS_KEYS:
        if k in cv:
            out[k] = _continuous_entry(cv[k])
    if "calibration_clean_16k" in cv:
        out["calibration"] = cv["calibration_clean_16k"]
    for k in ("random_split", "random_split_fixed_epochs"):
        if k in cv:
            out[k] = {"accuracy": cv[k]["clean_16k"]["accuracy"], "protocol": cv[k]["protocol"]}
    if cv.get("run_commands"):  # an ensemble merged from runs by tools/cv_members.py
        out["run_commands"] = cv["run_commands"]
    if cv.get("seeds_cv"):
        out["models_per_fold"] = cv["seeds_cv"]
    for p in sorted(reports.glob(f"cv_{rcp.name}__*.json")) if reports is not None else []:
        r = json.loads(p.read_text())
        key = p.stem.split("__", 1)[1]
        for k, name in (("clean_16k", "16k"), ("mulaw_8k", "mulaw_8k")):
            if k in r:
                entry = {"accuracy": r[k]["accuracy"], "macro_f1": r[k].get("macro_f1_present"),
                         "predicted": r[k].get("predicted"), "protocol": r.get("protocol"), "command": r.get("command")}
                out[f"{key}_{name}"] = {kk: v for kk, v in entry.items() if v is not None}
        for k in CONTINUOUS_KEYS:
            if k in r:
                out[f"{key}_{k}"] = _continuous_entry(r[k])
    # the shipped model itself (this ``version``) measured on a corpus (python -m tools.evaluate / tools.continuous --json)
    for p in sorted(reports.glob("shipped_*.json")) if reports is not None else []:
        r = json.loads(p.read_text())
        if r.get("model") != version:  # another model's measurements
            continue
        if "accuracy" in r:
            key = f"shipped_on_{r['corpus']}_{'mulaw_8k' if r.get('telephone') else '16k'}"
            out[key] = {k: r.get(k) for k in ("accuracy", "macro_f1_present", "max_label_share", "predicted",
                                              "n", "command")}
        for k in ("16k", "mulaw_8k"):
            if k in r:
                out[f"shipped_on_{r['corpus']}_continuous_{k}"] = {**_continuous_entry(r[k]), "command": r.get("command")}
    return out


def cv_temperature(cv: dict | None) -> float:
    """The temperature fitted on the CV's pooled clean clip probabilities (1.0 without a CV report)."""
    return float(((cv or {}).get("calibration_clean_16k") or {}).get("temperature", 1.0))


def refresh_meta(rcp: Recipe, out: str, reports: str, log=print, data=None) -> Path:
    """Rewrite ``evaluation`` in the model's JSON from ``reports/cv_<recipe>.json`` (no retraining).

    With ``data`` (the final fit's clips) and a recipe whose ``narrowband_prior`` is ``model``, the
    narrowband prior is computed from the telephone copies and written too: it changes no weight.
    """
    meta_path = Path(out) / f"{model_stem(rcp)}.json"
    cv_path = Path(reports) / f"cv_{rcp.name}.json"
    d = json.loads(meta_path.read_text())
    cv = json.loads(cv_path.read_text())
    if data is not None and rcp.narrowband_prior == "model":
        d["normalisation"] = narrowband_normalisation(data, rcp, d["normalisation"])
        d.setdefault("training", {}).setdefault("recipe", {})["narrowband_prior"] = rcp.narrowband_prior
        log(f"narrowband prior from the telephone copies of {len(data.items)} clips")
    d["evaluation"] = eval_summary(cv, rcp, Path(reports), d.get("version"))
    d["temperature"] = cv_temperature(cv)
    meta_path.write_text(json.dumps(d, indent=1) + "\n")
    log(f"updated {meta_path} from {cv_path}")
    return meta_path


def narrowband_normalisation(data, rcp: Recipe, norm: dict) -> dict:
    """A trained model's ``normalisation`` with the narrowband prior of its training clips added.

    Refused where ``data`` is not what the model was trained on (its wideband prior differs from the
    stored one). A model trained with ``train`` has its narrowband prior from the final fit already.
    """
    ncfg = fold_norm(data, rcp.with_(narrowband_prior="model"), np.arange(len(data.items)))
    if norm.get("mean") is None or not np.allclose(norm["mean"], ncfg.mean, atol=1e-5):
        raise RecipeError("the model's prior is not these clips' (another recipe or other data): "
                          "refresh with the data it was trained on")
    return {**norm, "narrowband_mean": ncfg.narrowband_mean, "narrowband_std": ncfg.narrowband_std}
