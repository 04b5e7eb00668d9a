"""Training and evaluation windows, cut by the streamer's own analysis chain (streamer.analysis).

Training windows sit at random places in a clip (time-shift augmentation) but are normalised
exactly as the streamer normalises the window that ends at the same frame. Evaluation windows are
the ones the streamer makes of the clip streamed alone (or after the same speaker's other clips),
and a clip's prediction is the mean of its speech windows' probabilities, as ``emostream classify``
gives it; a clip without speech windows has no prediction (NaN probabilities, label -1).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np

from streamer.analysis import ChannelAnalyzer, Windows, classify_windows, clip_probs, to_input
from streamer.config import ModelMeta, NormConfig
from streamer.features import window_means
from streamer.normalise import Normaliser
from tools.augment import is_narrowband
from tools.datasets import LABELS
from tools.training.recipe import Recipe

__all__ = ["training_meta", "fold_norm", "norm_config", "sample_window", "stream_windows", "eval_windows",
           "predict_clips", "clip_labels", "to_layout"]

to_layout = to_input  # [B, steps, C] -> the model's input layout (the classifier's own function)


def fold_norm(data, rcp: Recipe, idx) -> NormConfig:
    """The normalisation of a model trained on clips ``idx`` (their priors: clean, and telephone if the recipe asks)."""
    narrow = data.prior(idx, "tel") if rcp.narrowband_prior != "none" else None
    return norm_config(rcp, *data.prior(idx), narrow=narrow)


def norm_config(rcp: Recipe, mean, std, narrow=None) -> NormConfig:
    """The normalisation of a model trained on clips with these band statistics.

    ``narrow``: (mean, std) of the telephone copies, the prior for telephone-band sources.
    """
    def spread(sd):
        if not rcp.std_pool:
            return [float(v) for v in sd]
        # one spread for every coefficient (their RMS): the z-score then keeps the cepstrum's own
        # shape, i.e. it is an orthogonal rotation of mean-normalised log-mel bands
        return [float(np.sqrt(np.mean(np.square(sd))))] * len(sd)

    std = spread(std)
    if rcp.norm in ("running", "running_mean"):
        prior: float | list[float] = float(rcp.prior_frames)
        if rcp.prior_frames_shape is not None:
            prior = [prior] * len(mean)
            prior[1 : rcp.features.n_mfcc] = [float(rcp.prior_frames_shape)] * (rcp.features.n_mfcc - 1)
        nb = {} if narrow is None else dict(narrowband_mean=[float(v) for v in narrow[0]],
                                            narrowband_std=spread(narrow[1]))
        return NormConfig(kind=rcp.norm, mean=[float(v) for v in mean], std=std, prior_frames=prior, **nb)
    if rcp.norm == "fixed":
        return NormConfig(kind="fixed", mean=[float(v) for v in mean], std=std)
    return NormConfig(kind="none")


def training_meta(rcp: Recipe, ncfg: NormConfig, cfg=None) -> ModelMeta:
    """The metadata of the model being trained (what the streamer would read from its emotion.json)."""
    return ModelMeta(name=f"emostream-{rcp.name}", version="training", labels=list(LABELS),
                     features=cfg or rcp.features, gate=rcp.gate, normalisation=ncfg,
                     input_layout=rcp.input_layout)


def sample_window(mfcc, speech, cfg, ncfg: NormConfig, rng, ctx=None, narrowband: bool = False) -> np.ndarray:
    """One training window at a random place in the clip, normalised as the streamer would.

    ``ctx``: optional (frames, speech) streamed before the clip (the same speaker's earlier speech),
    so the running statistics are those of a longer stream. ``narrowband``: a telephone copy,
    normalised from the narrowband prior (where ``ncfg`` has one).
    """
    wf = cfg.window_frames
    n = len(mfcc)
    if n < wf:  # a clip shorter than a window: pad with its last (silent) frame
        pad = wf - n
        mfcc = np.concatenate([mfcc, np.repeat(mfcc[-1:], pad, 0)])
        speech = np.concatenate([speech, np.zeros(pad, bool)])
        n = wf
    s = int(rng.integers(0, n - wf + 1))
    w = window_means(mfcc, np.array([s]), cfg)
    norm = Normaliser(ncfg, cfg.n_channels, narrowband)
    if ctx is not None:
        norm.push(*ctx)
    st = norm.push(mfcc, speech)
    m, sd = st.at(np.array([s + wf - 1]))
    return norm.apply(w, m, sd)[0]


def stream_windows(mfcc, speech, meta: ModelMeta, ctx=None, narrowband: bool | None = False) -> list[Windows]:
    """The windows the streamer makes of one clip streamed alone (``ctx``: frames heard before it;
    ``narrowband``: a telephone-band source, or None: a source above 8 kHz whose band is detected)."""
    an = ChannelAnalyzer(meta, narrowband=narrowband)
    if ctx is not None:
        an.prime(*ctx)
    return an.frames(mfcc, speech)


def eval_windows(data, idx, version: str, meta: ModelMeta, speaker: bool = False,
                 hop_s: float | None = None, band: str = "rate") -> list[list[Windows]]:
    """Streamer windows of clips ``idx`` in ``version``, one list per clip.

    Each clip is streamed alone (the default), or with ``speaker=True`` after all the same
    speaker's other clips in ``idx`` (statistics of a long stream of that speaker). ``hop_s``:
    windows this far apart instead of the model's hop (as ``emostream --hop``). ``band``: how the
    streamer knows a telephone copy is telephone-band: ``rate`` (its source is at 8 kHz, as a
    telephone copy is cut), ``detect`` (it arrives at 16 kHz: the band detector decides, as for any
    source above 8 kHz) or ``wide`` (never: every copy starts from the wideband prior, as 2.3.0 did
    with resampled calls).
    """
    if band not in ("rate", "detect", "wide"):
        raise ValueError(f"band is rate, detect or wide, not {band!r}")
    v = data.cf.vindex(version)
    if hop_s is not None:
        meta = replace(meta, features=replace(meta.features, hop_s=hop_s))
    out = []
    for i in idx:
        ctx = None
        if speaker:
            others = [o for o in idx if data.speaker[o] == data.speaker[i] and o != i]
            ctx = (np.concatenate([data.cf.mfcc(o, v) for o in others]),
                   np.concatenate([data.speech[o][v] for o in others])) if others else None
        narrow = {"rate": is_narrowband(version), "detect": None, "wide": False}[band]
        out.append(stream_windows(data.cf.mfcc(i, v), data.speech[i][v], meta, ctx, narrow))
    return out


def predict_clips(predict: Callable[[np.ndarray], np.ndarray], wins: list[list[Windows]], layout: str,
                  min_fraction: float, n_labels: int = len(LABELS)) -> np.ndarray:
    """Clip probabilities [clips, labels]: the mean over each clip's speech windows, NaN without any.

    ``predict`` takes the model's input layout; every clip's windows go through it in one batch
    per window length.
    """
    flat = [w for ws in wins for w in ws]
    scored = classify_windows(lambda X: predict(to_layout(X, layout)), flat, min_fraction, n_labels)
    out = np.full((len(wins), n_labels), np.nan, np.float32)
    k = 0
    for c, ws in enumerate(wins):
        part = scored[k : k + len(ws)]
        k += len(ws)
        if part:
            p = clip_probs(np.concatenate([pr for _, pr in part]), np.concatenate([sp for sp, _ in part]))
            if p is not None:
                out[c] = p
    return out


def clip_labels(P: np.ndarray) -> np.ndarray:
    """Predicted label per clip; -1 for a clip without speech windows (no label, as ``classify`` says)."""
    P = np.asarray(P)
    lab = np.where(np.isnan(P).any(axis=1), -1, np.nan_to_num(P, nan=-1.0).argmax(axis=1))
    return lab.astype(int)
