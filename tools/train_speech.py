"""Train the speech detector's head: a window's frames (or its summary) -> probability of speech
(TensorFlow, one thread).

Data: the ``choose`` split of tools/speech_set.py (its own speakers and random streams), through the
streamer's chain as in tools/speech_eval.py. Windows the energy gate already rejects never reach the
head and are left out; a window is speech when it holds at least ``min_fraction`` of a window of speech,
non-speech when it comes from a non-speech stream or is a pause (under 50 ms of speech) in a speech
stream; windows in between are left out. Classes and non-speech kinds are weighted equally.

The threshold is chosen on out-of-fold probabilities (5 folds grouped by stream): the highest one
that keeps ``--keep`` of the speech time of the choose split. A leave-one-kind-out run (each
non-speech kind held out of training in turn) measures how the head copes with a kind of sound it
has never heard. The head is then trained on all of the choose split, converted to TFLite, measured
on the ``measure`` split, and written with its figures into the model's ``gate.detector``:

    python -m tools.train_speech --model model/emotion.json --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

# set before the streamer imports below pull in TensorFlow
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from streamer.config import ModelMeta, SpeechConfig, gate_dict, load_meta  # noqa: E402
from streamer.speech import FRAME_COLUMNS, FRAMES, INPUTS, SUMMARY, DetectorInputs, detector_features, summary_names  # noqa: E402
from tools import speech_eval, speech_set  # noqa: E402

PAUSE_S = 0.05  # a window with less speech than this in a speech stream is a pause
#: summary values given to the head as logarithms (besides every ``*_std``)
LOG_FEATURES = {"flux", "level_jitter", "ripple", "level_mod", "spectral_change", "above_floor", "f0_glide"}


def training_set(data: dict[str, np.ndarray], meta: ModelMeta, min_gated: float) -> tuple[np.ndarray, ...]:
    """Windows that reach the head, their labels, weights and groups (streams)."""
    g = meta.gate
    min_s = g.min_fraction * meta.features.window_s
    reach = data["gated"] >= min_gated
    speech = data["kind"] == "speech"
    pos = speech & (data["speech_s"] >= min_s)
    neg = ~speech | (data["speech_s"] < PAUSE_S)
    use = reach & (pos | neg)
    y = pos[use].astype(np.float32)
    kind = np.where(speech & ~pos, "pause", data["kind"])[use]
    # every non-speech kind (pauses in noise count as one) weighs as much as the others together
    # weigh speech: a rare kind of sound is not drowned by common ones
    w = np.zeros(len(y), np.float32)
    kinds = sorted(set(kind) - {"speech"})
    for k in kinds:
        m = kind == k
        w[m] = 0.5 / len(kinds) / m.sum()
    w[y == 1] = 0.5 / max((y == 1).sum(), 1)
    w *= len(y)
    return (data["x"][use], y, w, data["stream"][use], kind, data["speech_s"][use], data["family"][use],
            data["condition"][use])


def condition_balanced(speech_s: np.ndarray, y: np.ndarray, condition: np.ndarray) -> np.ndarray:
    """Speech seconds reweighted so that every condition (clean, noisy, 8 kHz, 8 kHz noisy) holds the
    same share of the speech time: the choose split has three noisy streams a speaker for each clean
    one, and a threshold that keeps 95 % of its speech time would keep more of cleaner speech."""
    out = np.asarray(speech_s, np.float64).copy()
    pos = y == 1
    for c in np.unique(condition[pos]):
        m = pos & (condition == c)
        out[m] /= max(out[m].sum(), 1e-12)
    return out


def build(x: np.ndarray, seed: int, names: list[str] | None = None):
    """The head: log-compressed spreads and rates, standardised (statistics of the training
    windows), two small layers."""
    import keras

    keras.utils.set_random_seed(seed)
    # spreads, changes and rates are positive with long tails: log(x + its median) evens them out
    scale = np.zeros(x.shape[1], np.float32)
    for i, n in enumerate(names or []):
        if n.endswith("_std") or n in LOG_FEATURES:
            scale[i] = max(float(np.median(x[:, i])), 1e-3)
    logged = scale > 0
    sc = keras.ops.convert_to_tensor(np.where(logged, scale, 1.0).astype(np.float32))
    lm = keras.ops.convert_to_tensor(logged.astype(np.float32))

    def compress(t):
        return lm * keras.ops.log(keras.ops.maximum(t, 0.0) / sc + 1.0) + (1.0 - lm) * t

    xc = np.where(logged, np.log(np.maximum(x, 0) / np.where(logged, scale, 1.0) + 1.0), x)
    norm = keras.layers.Normalization()
    norm.adapt(xc)
    inp = keras.Input((x.shape[1],))
    h = keras.layers.Lambda(compress)(inp)
    h = keras.layers.Lambda(lambda t: keras.ops.clip(t, -8.0, 8.0))(norm(h))  # outliers do not dominate
    h = keras.layers.Dense(64, activation="relu")(h)
    h = keras.layers.Dropout(0.1)(h)
    h = keras.layers.Dense(32, activation="relu")(h)
    out = keras.layers.Dense(1, activation="sigmoid")(h)
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy")
    return model


_COL = {name: i for i, name in enumerate(FRAME_COLUMNS)}
SMOOTHING = 0.05  # label smoothing: a head sure of every training window leaves no room for a threshold


def window_norm(t):
    """A ``frames-v1`` window [b, T, 18] as the convolution sees it, inside the head so that the
    streamer feeds raw frame channels: spectral envelope and pitch relative to the window's own
    (gated, voiced) means, level relative to its loudest gated frame, every frame the gate did not pass
    zeroed; and those means as a summary beside it. Returns (sequence [b, T, 17], summary [b, 15])."""
    from keras import ops

    def col(name: str, n: int = 1):
        return t[..., _COL[name] : _COL[name] + n]

    g = col("gated")
    gs = ops.maximum(ops.sum(g, axis=1, keepdims=True), 1.0)
    lv = col("level")
    peak = ops.max(ops.where(g > 0, lv, -200.0), axis=1, keepdims=True)
    rel = ops.maximum(lv - peak, -60.0) / 20.0
    cep = col("c1", 12)
    cm = ops.sum(cep * g, axis=1, keepdims=True) / gs
    vg = col("voicing") * g
    f0 = col("log2_f0")
    fm = ops.sum(f0 * vg, axis=1, keepdims=True) / ops.maximum(ops.sum(vg, axis=1, keepdims=True), 1.0)
    rip = col("ripple")
    seq = ops.concatenate([(cep - cm) * g / 10.0, rel * g, (f0 - fm) * vg * 2.0, vg, rip * g / 5.0, g], axis=-1)
    summary = ops.concatenate([cm[:, 0] / 10.0, fm[:, 0] - 7.0, ops.mean(rip, axis=1) / 5.0,
                               ops.mean(g, axis=1)], axis=-1)
    return seq, summary


def build_frames(shape: tuple[int, ...], seed: int, width: int = 32, pool: int = 2, members: int = 2,
                 pyramid: bool = True):
    """The ``frames-v1`` head: window normalisation, frames averaged in pairs (25 a second still
    resolve syllables), four convolutions of 5 with the frame rate halved between them (``pyramid``;
    else dilated 1, 2, 4, 8 at one rate): about 2.4-3 s of context, syllables, notes, beats; mean and
    max over time, two small layers; ``members`` such networks averaged in one graph (a single head's
    figures swing by a few points with its seed)."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape)
    seq, summary = keras.layers.Lambda(window_norm)(inp)
    if pool > 1:
        seq = keras.layers.AveragePooling1D(pool)(seq)
    outs = []
    for _ in range(members):
        h = seq
        for i in range(4):
            if pyramid and i:  # halve the frame rate between convolutions: the context grows as dilation would
                h = keras.layers.AveragePooling1D(2, padding="same")(h)
            # (TFLite runs a dilated convolution between space-to-batch reshuffles that cost about as
            # much as the convolution: one pyramid network is 0.03 against 0.05 ms a window)
            h = keras.layers.Conv1D(width, 5, dilation_rate=1 if pyramid else 2**i, padding="same",
                                    activation="relu")(h)
        z = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling1D()(h), keras.layers.GlobalMaxPooling1D()(h),
                                        summary])
        z = keras.layers.Dense(32, activation="relu")(z)
        z = keras.layers.Dropout(0.2)(z)
        outs.append(keras.layers.Dense(1, activation="sigmoid")(z))
    out = outs[0] if members == 1 else keras.layers.Average()(outs)
    model = keras.Model(inp, out)
    # the average of the weights over the last few epochs: single heads swing from epoch to epoch
    model.compile(optimizer=keras.optimizers.Adam(2e-3, use_ema=True, ema_momentum=0.998),
                  loss=keras.losses.BinaryCrossentropy(label_smoothing=SMOOTHING))
    return model


def fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, seed: int, epochs: int, names: list[str] | None = None,
        arch: str = "pyramid", members: int = 2):
    """Train a head on windows (``names``: the summary's value names; None for frames)."""
    if x.ndim == 3:
        batch = 64
        model = build_frames(x.shape[1:], seed, members=members, pyramid=arch == "pyramid")
    else:
        batch = 128
        model = build(x, seed, names)
    model.fit(x.astype(np.float32, copy=False), y, sample_weight=w, epochs=epochs, batch_size=batch, verbose=0,
              shuffle=True)
    return model


def predict(model, x: np.ndarray) -> np.ndarray:
    """Speech probabilities of a Keras head."""
    return np.concatenate([model.predict(np.asarray(x[a : a + 2048], np.float32), batch_size=2048, verbose=0).reshape(-1)
                           for a in range(0, len(x), 2048)]) if len(x) else np.zeros(0, np.float32)


def kept(p: np.ndarray, y: np.ndarray, speech_s: np.ndarray, thr: float) -> float:
    """Share of the speech time (of speech windows) whose window the head keeps at ``thr``."""
    m = y == 1
    return float((speech_s[m] * (p[m] >= thr)).sum() / speech_s[m].sum())


def choose_threshold(p: np.ndarray, y: np.ndarray, speech_s: np.ndarray, keep: float) -> float:
    """The highest threshold (4 decimals) that still keeps ``keep`` of the speech time."""
    m = y == 1
    order = np.argsort(p[m])
    ps, ws = p[m][order], speech_s[m][order]
    # dropping the lowest-probability speech windows while their time stays within 1 - keep
    dropped = np.cumsum(ws) / max(ws.sum(), 1e-12)
    i = int(np.searchsorted(dropped, 1.0 - keep, side="right"))
    thr = round(float(np.floor(float(ps[min(i, len(ps) - 1)]) * 1e4) / 1e4), 4)
    while thr > 1e-4 and kept(p, y, speech_s, thr) < keep:
        thr = round(thr - 1e-4, 4)
    return max(thr, 1e-4)


def main(argv: list[str] | None = None) -> int:
    """Train, choose the threshold, measure, write model/speech.tflite and the metadata block."""
    ap = argparse.ArgumentParser(prog="python -m tools.train_speech", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="model/emotion.json", help="emotion model metadata to add the detector to")
    ap.add_argument("--out", default=None, help="TFLite file to write (default: speech.tflite beside the model)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--inputs", choices=INPUTS, default=FRAMES,
                    help="the head's input: the window's frames (default) or its summary (models 1.6-2.0)")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default: frames 25, summary 60)")
    ap.add_argument("--keep", type=float, default=0.955,
                    help="speech time to keep on the choose split (out of fold; its conditions weighed alike): half a point "
                         "above the 95 %% target, since other speakers lose a little more")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--per-kind", type=int, default=8, help="choose-split streams per non-speech kind, rate and family")
    ap.add_argument("--families", type=speech_set.check_families, default="a",
                    help="non-speech generator families to train on (tools/speech_set.py, tools/nonspeech_other.py)")
    ap.add_argument("--arch", choices=("pyramid", "dilated"), default="pyramid",
                    help="frames head: undilated convolutions with the frame rate halved between them (default), "
                         "or dilated ones at one rate (TFLite runs dilation between costly reshuffles)")
    ap.add_argument("--members", type=int, default=2, help="frames head: networks averaged in one graph")
    ap.add_argument("--mixtures", type=int, default=160,
                    help="choose-split streams of two non-speech kinds at once, per rate and family (0: none)")
    ap.add_argument("--noisy", type=int, default=5, help="choose-split noisy streams per speaker and rate")
    ap.add_argument("--min-fraction", type=float, default=0.1,
                    help="share of a window's frames the energy gate must pass for the head to judge it")
    ap.add_argument("--no-holdout", action="store_true", help="skip the leave-one-kind-out run")
    ap.add_argument("--dry-run", action="store_true", help="measure only; write nothing")
    ap.add_argument("--remeasure", action="store_true",
                    help="train nothing: measure the model's existing head again and rewrite its figures")
    args = ap.parse_args(argv)
    if args.epochs is None:
        args.epochs = 25 if args.inputs == FRAMES else 60
    if args.remeasure:
        return remeasure(Path(args.model))

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from tools.convert import to_tflite

    meta_path = Path(args.model)
    meta = load_meta(meta_path)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    data = speech_eval.collect("choose", meta, per_kind=args.per_kind, libs=False, progress=log, noisy=args.noisy,
                              families=args.families, inputs=args.inputs, mixtures=args.mixtures)
    x, y, w, groups, kind, speech_s, family, condition = training_set(data, meta, args.min_fraction)
    speech_w = condition_balanced(speech_s, y, condition)
    del data
    log(f"choose split: {len(y)} windows reach the head ({int(y.sum())} speech)")
    names = summary_names(meta.features) if args.inputs == SUMMARY else None

    # out-of-fold probabilities, folds grouped by stream
    rng = np.random.default_rng(args.seed)
    streams = np.unique(groups)
    fold_of = dict(zip(rng.permutation(streams), np.arange(len(streams)) % args.folds))
    fold = np.array([fold_of[g] for g in groups])
    oof = np.zeros(len(y), np.float32)
    for k in range(args.folds):
        m = fold == k
        oof[m] = predict(fit(x[~m], y[~m], w[~m], args.seed, args.epochs, names, args.arch, args.members), x[m])
    thr = choose_threshold(oof, y, speech_w, args.keep)
    ns = y == 0
    for t in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7):
        log(f"  out of fold at {t}: speech time kept {kept(oof, y, speech_w, t):.4f} (conditions weighed alike), "
            f"non-speech rejected {float((oof[ns] < t).mean()):.4f}")
    log(f"threshold {thr}: out of fold, speech time kept {kept(oof, y, speech_w, thr):.4f}, "
        f"non-speech reaching the head rejected {float((oof[ns] < thr).mean()):.4f}")

    holdout: dict[str, float] = {}
    if not args.no_holdout:
        for k in sorted(set(kind) - {"speech", "pause"}):
            m = kind == k
            model = fit(x[~m], y[~m], w[~m], args.seed, args.epochs, names, args.arch, args.members)
            holdout[k] = round(float((predict(model, x[m]) < thr).mean()), 4)
            log(f"held-out kind {k}: {holdout[k]:.4f} of its windows that reach the head rejected")

    # a family of generators held out of training in turn, measured on the measure split's streams of
    # that family: how the head meets sounds made in a way it never heard (the honest figure)
    measure_data = speech_eval.collect("measure", meta, per_kind=MEASURE_PER_KIND, libs=False,
                                       progress=lambda s: None, families=MEASURE_FAMILIES, inputs=args.inputs)
    unseen: dict[str, dict] = {}
    if len(args.families) > 1:
        for fam in args.families:
            m = (y == 0) & (family == fam)
            head = fit(x[~m], y[~m], w[~m], args.seed, args.epochs, names, args.arch, args.members)
            unseen[fam] = measure_keras(head, meta, args.min_fraction, thr, measure_data, fam)
            log(f"family {fam} held out of training: non-speech of that family rejected {unseen[fam]['rejected']:.4f}, "
                f"speech kept {unseen[fam]['kept']:.4f}")

    model = fit(x, y, w, args.seed, args.epochs, names, args.arch, args.members)
    out = Path(args.out) if args.out else meta_path.with_name("speech.tflite")
    tfl = to_tflite(model, quant="none")
    command = "python -m tools.train_speech " + " ".join(argv if argv is not None else sys.argv[1:])
    spec = SpeechConfig(kind="head", model=out.name, inputs=args.inputs, threshold=thr, min_fraction=args.min_fraction,
                        features=tuple(detector_features(meta.features, args.inputs).items()), command=command)
    if args.dry_run:
        return 0
    out.write_bytes(tfl)

    # measure the written head on the measure split through the same code the streamer runs
    d = json.loads(meta_path.read_text(encoding="utf-8"))
    figs = measure(meta, spec, out, measure_data, args.families)
    figs["held_out_kinds_rejected"] = holdout
    figs["held_out_family"] = unseen
    figs["threshold_chosen_on"] = (f"choose split out of fold, {args.keep:g} of speech time kept "
                                   "(clean, noisy, 8 kHz and 8 kHz noisy weighed alike)")
    spec = SpeechConfig(**{**vars(spec), "figures": SpeechConfig.from_dict({"figures": figs}).figures})
    new_meta = ModelMeta.from_dict(d, meta.model_path)
    new_meta = ModelMeta(**{**vars(new_meta), "gate": type(new_meta.gate)(**{**vars(new_meta.gate), "detector": spec})})
    d["gate"] = gate_dict(new_meta.gate)
    # only the gate block changes; the rest of the file keeps its owner's layout (indent 1)
    meta_path.write_text(json.dumps(d, indent=1) + "\n", encoding="utf-8")
    figs = add_cost(meta_path)
    log(f"wrote {out} ({len(tfl)} bytes) and gate.detector in {meta_path}")
    print(json.dumps(figs, indent=1))
    return 0


def remeasure(meta_path: Path) -> int:
    """Measure a model's shipped head on today's measure split; only ``gate.detector.figures`` change
    (what it was trained on, its threshold and its command stay)."""
    meta = load_meta(meta_path)
    spec = meta.gate.detector
    if spec is None:
        print(f"error: {meta_path} names no speech detector", file=sys.stderr)
        return 2
    d = json.loads(meta_path.read_text(encoding="utf-8"))
    old = d["gate"]["detector"].get("figures") or {}
    # heads written before the second family existed were trained on family a
    trained = str(old.get("trained_on_families", "a"))
    data = speech_eval.collect("measure", meta, per_kind=MEASURE_PER_KIND, libs=False, progress=lambda s: None,
                               families=MEASURE_FAMILIES, inputs=spec.inputs)
    figs = measure(meta, spec, spec.path(meta.model_path), data, trained)
    for k in ("held_out_kinds_rejected", "held_out_family", "threshold_chosen_on"):
        if k in old:
            figs[k] = old[k]
    d["gate"]["detector"]["figures"] = figs
    meta_path.write_text(json.dumps(d, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(add_cost(meta_path), indent=1))
    return 0


def add_cost(meta_path: Path) -> dict:
    """Time the written detector inside the whole chain (``speech_eval.cost``) and add its share of a
    window's processing to ``gate.detector.figures``; returns the figures."""
    c = speech_eval.cost(str(meta_path))
    d = json.loads(meta_path.read_text(encoding="utf-8"))
    figs = d["gate"]["detector"]["figures"]
    figs.update(cost_share=c["file_share"], cost_share_live=c["live_share"],
                cost_ms_per_window=c["file_detector_ms_per_window"])
    meta_path.write_text(json.dumps(d, indent=1) + "\n", encoding="utf-8")
    return figs


MEASURE_PER_KIND = 6  # measure-split streams per non-speech kind, rate and family
#: every family; speech in the measure split lies under beds of the last one (c)
MEASURE_FAMILIES = "abc"
_KEYS = ["rejected", "rejected 16k", "rejected 8k-mulaw", "kept", "kept 16k", "kept 16k-noisy",
         "kept 8k-mulaw", "kept 8k-mulaw-noisy", "pauses in noise rejected"]


def _figures(data: dict[str, np.ndarray], p: np.ndarray, meta: ModelMeta, min_fraction: float, thr: float,
             families: str | None = None) -> dict:
    """Rejection and keeping figures of probabilities ``p`` (non-speech of ``families`` only, when given)."""
    keep = np.ones(len(p), bool) if families is None else \
        (data["kind"] == "speech") | np.isin(data["family"], list(families))
    sub = {k: v[keep] for k, v in data.items() if k != "x" and isinstance(v, np.ndarray) and len(v) == len(p)}
    acc = (sub["gated"] >= min_fraction) & (p[keep] >= thr)
    s = speech_eval.score(sub, acc, meta.gate.min_fraction * meta.features.window_s)
    figs = {k.replace(" ", "_").replace("-", "_"): round(s[k], 4) for k in _KEYS}
    figs["rejected_by_kind"] = {k: round(s[f"rejected {k}"], 4) for k in speech_set.NONSPEECH}
    return figs


def measure_keras(model, meta: ModelMeta, min_fraction: float, thr: float, data: dict[str, np.ndarray],
                  family: str) -> dict:
    """A Keras head's figures on the measure split's non-speech of one generator family (and all its speech)."""
    return _figures(data, predict(model, data["x"]), meta, min_fraction, thr, family)


def measure(meta: ModelMeta, spec: SpeechConfig, path: Path, data: dict[str, np.ndarray], families: str) -> dict:
    """The written head's figures on the measure split (speakers and streams never used in training),
    through the streamer's own TFLite head."""
    p = speech_eval.run_head(path, DetectorInputs(spec.inputs, meta.features).shape(), data["x"])
    unseen = "".join(f for f in speech_set.FAMILIES if f not in families)
    # the headline figures are on the families of sounds the head never heard, when there are any
    figs = _figures(data, p, meta, spec.min_fraction, spec.threshold, unseen or None)
    for fam in speech_set.FAMILIES:
        figs[f"rejected_family_{fam}"] = _figures(data, p, meta, spec.min_fraction, spec.threshold, fam)["rejected"]
    seen = (f"non-speech of generator families {', '.join(unseen)}, never heard in training; speech under beds of "
            f"family {data['family'][data['kind'] == 'speech'][0]}" if unseen else
            "every generator family, all also used in training (other draws)")
    figs["measured_on"] = ("tools/speech_set.py measure split, " + seen + "; speakers " +
                           ", ".join(speech_set.SPEAKERS["measure"]) +
                           "; command: python -m tools.train_speech --model MODEL.json --remeasure")
    figs["trained_on_families"] = families
    return figs


if __name__ == "__main__":
    raise SystemExit(main())
