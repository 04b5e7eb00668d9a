"""Evaluation protocols: speaker-grouped CV on a corpus, cross-corpus, and the seed's random split.

Every protocol trains on some clips and scores the held-out speakers' clips as ``emostream
classify`` does (clean, 8 kHz mu-law, MP3/Opus copies, per-speaker streams), and, with
``continuous``, their utterances inside continuous streams run through the streamer's pipeline
(tools/continuous.py): the timeline users read. Nothing here is tuned on the clips it scores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from tools import continuous
from tools.training.loop import fit, keras_predict
from tools.training.network import members_of
from tools.training.recipe import Recipe
from tools.training.reports import calibrate, ece, fit_temperature, metrics, pooled_metrics
from tools.training.windows import clip_labels, eval_windows, fold_norm, predict_clips, training_meta

__all__ = ["FOLDS", "TEST_SETS", "CVOptions", "folds_of", "run_cv", "run_cross_corpus", "run_random_split",
           "set_name", "continuous_clips"]

#: RAVDESS's 5 folds, 4 actors each (actor numbers)
FOLDS = [list(range(a, a + 4)) for a in (1, 5, 9, 13, 17)]

# CV test sets: the name a set has inside a fold -> its name in the report
TEST_SETS = {"clean": "clean_16k", "tel": "mulaw_8k", "clean_spk": "speaker_clean_16k",
             "tel_spk": "speaker_mulaw_8k", "codec": "codec_16k",
             # the telephone copies arriving at 16 kHz (a call resampled upstream): band detected, or not at all
             "tel_detect": "mulaw_8k_as_16k", "tel_wide": "mulaw_8k_as_16k_wideband_prior",
             # the clean copies through the band detector (a false alarm would move them)
             "clean_detect": "clean_16k_band_detected"}


def set_name(v: str) -> str:
    """Report name of a test set key; ``clean@0.5`` is the clean set scored with windows 0.5 s apart,
    ``clean#emodb`` the clean set scored by the EmoDB head alone (a head per corpus)."""
    v, _, head = v.partition("#")
    base, _, hop = v.partition("@")
    return TEST_SETS[base] + (f"_hop{hop}s" if hop else "") + (f"_head_{head}" if head else "")


@dataclass
class CVOptions:
    """How a protocol trains and scores: seeds, models per fold, extra test sets."""

    seed: int = 1
    seeds_cv: int = 1
    eval_hops: list[float] = field(default_factory=list)
    continuous: bool = True
    save_probs: str | None = None
    curve: bool = True  # the first model's clip accuracy every 5 epochs (to choose an epoch count)
    folds: list[int] | None = None  # only these folds (1-based): a cheaper, paired look at a recipe
    checkpoint: Callable[[dict], None] | None = None  # gets the pooled figures after each fold but the last


def folds_of(data, corpus: str) -> list[list[str]]:
    """Speaker folds of a corpus: RAVDESS's 5 folds of 4 actors; any other corpus 5 folds of its speakers in order."""
    idx = data.where(corpus)
    if corpus == "ravdess":
        folds = [[f"ravdess-{a:02d}" for a in f] for f in FOLDS]
        present = set(data.speaker[idx])
        return [f for f in folds if present & set(f)]
    spk = sorted(set(data.speaker[idx]))
    k = min(5, len(spk))
    return [list(x) for x in np.array_split(np.array(spk), k)]


def continuous_clips(data, idx) -> list[tuple[np.ndarray, int, str]]:
    """(audio at the model's rate, label, speaker) of clips ``idx``, for continuous streams."""
    from streamer.sources import load_audio

    sr = data.cfg.sample_rate
    return [(load_audio(data.items[i].path, sr)[0], int(data.y[i]), str(data.speaker[i])) for i in idx]


def _test_sets(data, te, rcp: Recipe, meta, opts: CVOptions) -> dict:
    sets = {v: (eval_windows(data, te, v, meta), data.y[te]) for v in ("clean", "tel")}
    if "codec" in data.cf.versions:  # the test speakers' MP3/Opus copies (never trained on in this fold)
        sets["codec"] = (eval_windows(data, te, "codec", meta), data.y[te])
    if rcp.norm in ("running", "running_mean"):
        for v in ("clean", "tel"):
            sets[v + "_spk"] = (eval_windows(data, te, v, meta, speaker=True), data.y[te])
    if meta.normalisation.narrowband_mean is not None:
        for key, v, band in (("tel_detect", "tel", "detect"), ("tel_wide", "tel", "wide"),
                             ("clean_detect", "clean", "detect")):
            sets[key] = (eval_windows(data, te, v, meta, band=band), data.y[te])
    for h in opts.eval_hops:
        for v in ("clean", "tel"):
            sets[f"{v}@{h:g}"] = (eval_windows(data, te, v, meta, hop_s=h), data.y[te])
    return sets


def _fold(data, rcp: Recipe, tr, te, val, opts: CVOptions, fi: int, log) -> dict:
    """Train the fold's models on ``tr``; score ``te``: per set the summed clip probabilities and each model's."""
    ncfg = fold_norm(data, rcp, tr)
    meta = training_meta(rcp, ncfg)
    sets = _test_sets(data, te, rcp, meta, opts)
    g = rcp.gate.min_fraction
    P = {k: 0 for k in sets}
    members: dict[str, list] = {}
    head_members: dict[str, list] = {}
    infos, models = [], []
    for s, view in members_of(rcp, opts.seeds_cv):
        # the curve (for choosing the epoch count) is read from the first model of a fold only
        curve = sets if opts.curve and not rcp.early_stopping and not infos else None
        heads: dict = {}
        model, info = fit(data, tr, rcp, ncfg, seed=opts.seed + 1000 * fi + s, val=val, curve_sets=curve,
                          log=log, view=view, head_models=heads)
        infos.append(info)
        models.append(model)
        for v in P:
            p = predict_clips(keras_predict(model), sets[v][0], rcp.input_layout, g)
            P[v] = P[v] + p
            members.setdefault(v, []).append(p)
            for c, hm in heads.items():  # each corpus's head alone (the shipped mix is ``model``)
                head_members.setdefault(f"{v}#{c}", []).append(
                    predict_clips(keras_predict(hm), sets[v][0], rcp.input_layout, g))
    out = {"P": P, "members": members, "head_members": head_members, "infos": infos}
    if opts.continuous and rcp.input_layout == "steps":
        def predict(X):
            return np.mean([np.asarray(m(X, training=False)) for m in models], axis=0)

        streams = continuous.build_streams(continuous_clips(data, te), data.cfg.sample_rate, seed=fi)
        out["continuous"] = {key: continuous.evaluate_streams(streams, meta, predict, telephone=tel,
                                                              variants=continuous.VARIANTS)
                             for key, tel in (("16k", False), ("mulaw_8k", True))}
    return out


def _pool_continuous(per_fold: list[dict]) -> dict:
    """Continuous-speech accuracy over every fold's streams together, and per fold."""
    out = {}
    for key in ("16k", "mulaw_8k"):
        allsc = {f"{n} (fold {fi + 1})": sc for fi, f in enumerate(per_fold) for n, sc in f[key].items()}
        out[f"continuous_{key}"] = continuous.summarise(allsc)
        out[f"continuous_{key}"]["fold_speaker_timeline"] = [continuous.summarise(f[key]).get("speaker_timeline")
                                                            for f in per_fold]
        t = np.array([v for n, s in allsc.items() if n.startswith("speaker") for v in s["true"]])
        p = np.array([v for n, s in allsc.items() if n.startswith("speaker") for v in s["timeline"]])
        m = metrics(t, p)
        out[f"continuous_{key}"].update(recall=m["recall"], predicted=m["predicted"], confusion=m["confusion"])
    return out


def _calibration(P_folds: list[np.ndarray], ys: list[np.ndarray]) -> dict:
    """Temperature scaling of the pooled clean CV probabilities.

    ``temperature``: fitted on all folds (what a shipped model would use). ``ece_cross_fitted``: each
    fold's probabilities scaled by the temperature fitted on the other folds, so the calibrated
    error is never measured on the clips it was fitted to.
    """
    P, y = np.concatenate(P_folds), np.concatenate(ys)
    out = {"temperature": round(fit_temperature(P, y), 3), "ece": round(ece(P, y), 4)}
    if len(P_folds) > 1:
        cal = []
        for k in range(len(P_folds)):
            t = fit_temperature(np.concatenate([p for j, p in enumerate(P_folds) if j != k]),
                                np.concatenate([yy for j, yy in enumerate(ys) if j != k]))
            cal.append(calibrate(P_folds[k], t))
        out["ece_cross_fitted"] = round(ece(np.concatenate(cal), y), 4)
    out["ece_after"] = round(ece(calibrate(P, out["temperature"]), y), 4)
    return out


def _run_folds(data, rcp: Recipe, folds: list[tuple[int, np.ndarray, np.ndarray, np.ndarray | None]],
               opts: CVOptions, log) -> dict:
    """Train and score each (fold number, train, test, validation) fold; pool the folds' figures.

    The fold number fixes the fold's seeds and streams, so a run of some folds (``--folds``) is
    paired with the same folds of a full run.
    """
    res: dict = {"folds": []}
    preds: dict[str, list] = {}
    probs: dict[str, list] = {}
    ytrue, cont = [], []
    members: dict[str, list] = {}
    for k, (fi, tr, te, val) in enumerate(folds):
        log(f"fold {fi + 1} ({k + 1} of {len(folds)}): {len(te)} test clips ({', '.join(sorted(set(data.speaker[te])))}), "
            f"{len(tr)} train clips")
        f = _fold(data, rcp, tr, te, val, opts, fi, log)
        fold = {"fold": fi + 1, "test_speakers": sorted(set(data.speaker[te].tolist())), "train": f["infos"]}
        for v, P in f["P"].items():
            fold[v] = metrics(data.y[te], clip_labels(P))
            preds.setdefault(v, []).append(clip_labels(P))
            probs.setdefault(v, []).append(P / len(f["infos"]))
            for p in f["members"][v]:
                members.setdefault(f"{v}/{k}", []).append(p)
        for v, ps in f["head_members"].items():
            preds.setdefault(v, []).append(clip_labels(np.sum(ps, axis=0)))
            members.setdefault(f"{v}/{k}", []).extend(ps)
        if "continuous" in f:
            cont.append(f["continuous"])
            fold["continuous_16k"] = continuous.summarise(f["continuous"]["16k"])
            fold["continuous_mulaw_8k"] = continuous.summarise(f["continuous"]["mulaw_8k"])
        ytrue.append(data.y[te])
        log(f"  fold {fi + 1}: clean {fold['clean']['accuracy']}, 8 kHz mu-law {fold['tel']['accuracy']}"
            + (f", continuous {fold['continuous_16k'].get('speaker_timeline')}" if cont else ""))
        res["folds"].append(fold)
        _pool(res, rcp, opts, preds, probs, ytrue, cont, members)
        if opts.checkpoint is not None and k + 1 < len(folds):
            opts.checkpoint({**res, "partial": f"{k + 1} of {len(folds)} folds"})
    return res


def _pool(res: dict, rcp: Recipe, opts: CVOptions, preds, probs, ytrue, cont, members) -> None:
    """The figures over the folds done so far (all of them at the end)."""
    if opts.save_probs:
        np.savez_compressed(opts.save_probs, **{k: np.stack(v) for k, v in members.items()},
                            **{f"y/{fi}": y for fi, y in enumerate(ytrue)},
                            folds=np.array([f["fold"] for f in res["folds"]]),  # the CV's fold numbers (1-based)
                            seeds=np.array([opts.seed + s for s, _ in members_of(rcp, opts.seeds_cv)]),
                            recipe=json.dumps(rcp.to_json(), sort_keys=True))
    for v, p in preds.items():
        res[set_name(v)] = pooled_metrics(ytrue, p)
    if cont:
        res.update(_pool_continuous(cont))
    res["calibration_clean_16k"] = _calibration(probs["clean"], ytrue)
    if not rcp.early_stopping and opts.curve:
        # mean curve over folds (first seed): the epoch count for the final fit is chosen from it
        cs = [f["train"][0]["curve"] for f in res["folds"]]
        res["curve"] = [
            {"epoch": c[0]["epoch"], **{k: round(float(np.mean([cc[j][k] for cc in cs])), 4)
                                        for k in c[0] if k not in ("epoch", "loss")}}
            for j, c in enumerate(zip(*cs))
        ]
    elif rcp.early_stopping:
        res["best_epochs"] = [f["train"][0]["best_epoch"] for f in res["folds"]]


def run_cv(data, rcp: Recipe, opts: CVOptions, corpus: str = "ravdess", log=print) -> dict:
    """Speaker-grouped CV on ``corpus``; each fold trains on every other clip of the data (other corpora too)."""
    groups = folds_of(data, corpus)
    folds = []
    for fi, test in enumerate(groups):
        if opts.folds and fi + 1 not in opts.folds:
            continue
        te = np.flatnonzero(np.isin(data.speaker, test))
        tr = np.flatnonzero(~np.isin(data.speaker, test))
        val = None
        if rcp.early_stopping:  # early stopping on the next fold's speakers, never on the test speakers
            nxt = groups[(fi + 1) % len(groups)]
            val = np.flatnonzero(np.isin(data.speaker, nxt))
            tr = np.flatnonzero(~np.isin(data.speaker, test + nxt))
        folds.append((fi, tr, te, val))
    trained_on = sorted(set(data.corpus.tolist()))
    res = {"protocol": f"{len(groups)}-fold speaker-grouped CV on {corpus}: "
                       + str([[s.split('-')[-1] for s in g] for g in groups])
                       + f"; trained on the other speakers of {' + '.join(trained_on)}"
                       + (f"; only folds {opts.folds}" if opts.folds else ""),
           "test_corpus": corpus, "train_corpora": trained_on}
    if opts.checkpoint is not None:
        # a partial report names its protocol too, so tools.cv_merge can pool it with the other folds
        opts = replace(opts, checkpoint=lambda part, cp=opts.checkpoint, head=dict(res): cp({**head, **part}))
    res.update(_run_folds(data, rcp, folds, opts, log))
    return res


def run_cross_corpus(data, rcp: Recipe, train: str, test: str, opts: CVOptions, log=print) -> dict:
    """Train on every clip of one corpus, score every clip of another (no speaker or corpus shared)."""
    tr, te = data.where(train), data.where(test)
    val = None
    if rcp.early_stopping:
        raise ValueError("cross-corpus runs train a fixed epoch count (no early stopping)")
    res = {"protocol": f"cross-corpus: trained on all of {train} ({len(tr)} clips), tested on all of {test} "
                       f"({len(te)} clips)", "train_corpora": [train], "test_corpus": test}
    res.update(_run_folds(data, rcp, [(0, tr, te, val)], opts, log))
    return res


def run_random_split(data, rcp: Recipe, seed: int, log=print) -> dict:
    """The seed's protocol: a random 80/20 file split (same actors in train and test). Inflated."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(data.items))
    n_te = len(perm) // 5
    te, rest = perm[:n_te], perm[n_te:]
    n_va = len(rest) // 8
    val, tr = rest[:n_va], rest[n_va:]
    ncfg = fold_norm(data, rcp, tr)
    if not rcp.early_stopping:
        tr = rest  # a fixed epoch count: no validation clips needed
    model, info = fit(data, tr, rcp, ncfg, seed=seed, val=val, log=log)
    wins = eval_windows(data, te, "clean", training_meta(rcp, ncfg))
    P = predict_clips(keras_predict(model), wins, rcp.input_layout, rcp.gate.min_fraction)
    how = ("early stopping on a random 1/8 of train" if rcp.early_stopping
           else f"fixed {rcp.epochs} epochs, no early stopping")
    out = {"protocol": "random 80/20 file split (actors shared by train and test), " + how,
           "clean_16k": metrics(data.y[te], clip_labels(P)), "train": info}
    log(f"random split: {out['clean_16k']['accuracy']}")
    return out

