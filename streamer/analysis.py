"""The analysis chain: one composition of frames, speech gate, normaliser, windows and classifier.

    samples -> FrameFeaturizer -> speech flags -> (band detector ->) running normaliser -> WindowAssembler -> Windows
    Windows of any channels or clips -> classify_windows (batched by window length) -> probabilities

Everything that turns audio into window probabilities goes through here: the streaming
:class:`~streamer.pipeline.Pipeline` (live, files, ``classify``/``label``), training
(``tools.training``, which feeds cached frame features to :meth:`ChannelAnalyzer.push_frames`)
and evaluation (``tools.evaluate``, ``tools.continuous``). A clip's window probabilities are
therefore the same whichever of them computed it (tests/test_analysis.py).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np

from streamer.bandwidth import BandDetector
from streamer.config import ModelMeta, NormConfig
from streamer.features import FrameFeaturizer, WindowAssembler
from streamer.speech import SpeechDetector
from streamer.normalise import Normaliser

__all__ = ["pauses_before_centre", "ChannelAnalyzer", "Windows", "classify_windows", "clip_probs", "to_input"]

#: a batch of windows [w, steps, C] -> probabilities [w, n_labels]
Predict = Callable[[np.ndarray], np.ndarray]


class Windows(NamedTuple):
    """Windows cut from one channel: start frames, normalised features, speech fraction, frames per
    window, and the longest pause (seconds) in the hop before each window's centre."""

    starts: np.ndarray  # [w] absolute start frame
    feats: np.ndarray  # [w, steps, C]
    speech_frac: np.ndarray  # [w] fraction of the window's frames flagged as speech
    frames: int  # frames per window (a short final window has fewer)
    pause: np.ndarray | None = None  # [w] seconds; None: not measured (zero)


def pauses_before_centre(flags: np.ndarray, hop_steps: int, step_s: float) -> np.ndarray:
    """Per window, the longest run of non-speech steps that reaches into the ``hop_steps`` before its centre.

    ``flags`` [w, steps] holds each step's speech fraction (a step under half speech is a pause).
    A run is measured whole inside the window, so a pause that began before the hop counts in full
    as far as the window sees it. The timeline restarts its smoothing after such a pause: the
    utterance after it may carry another emotion (a live stream knows this 1.5 s after the pause).
    """
    w, n = flags.shape
    out = np.zeros(w)
    if w == 0 or n == 0:
        return out
    quiet = flags < 0.5
    c = n // 2
    lo = max(0, c - hop_steps)
    for j in np.flatnonzero(quiet[:, lo:c].any(axis=1)):
        q = quiet[j].astype(np.int8)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], q, [0]])))
        starts, ends = edges[0::2], edges[1::2]
        hit = (ends > lo) & (starts < c)
        out[j] = float(np.max(ends[hit] - starts[hit])) * step_s
    return out


class ChannelAnalyzer:
    """One channel's frame features, speech flags, normaliser and windows (bounded state).

    Args:
        meta: the model's metadata (features, gate, normalisation).
        norm: normalisation to use instead of the metadata's (training: the fold's prior).
        narrowband: the channel carries telephone-band audio (True: its source is sampled at 8 kHz
            or less; the normaliser starts from the model's narrowband prior where it has one), does
            not (False), or may (None, the default: a :class:`~streamer.bandwidth.BandDetector`
            listens to the first second of speech and switches to that prior if the bands above
            4 kHz are empty, as in a call resampled upstream).
    """

    def __init__(self, meta: ModelMeta, norm: NormConfig | None = None, narrowband: bool | None = None):
        f = meta.features
        self.cfg = f
        self.featurizer = FrameFeaturizer(f)
        self.gate = SpeechDetector(meta)  # the energy gate, then the model's speech detector if it names one
        self.norm = Normaliser(norm or meta.normalisation, f.n_channels, bool(narrowband))
        self.band = BandDetector(f) if (narrowband is None and self.norm.has_narrowband
                                        and BandDetector.usable(f)) else None
        # the first frame normalised from the narrowband prior (0: all of them; None: none yet)
        self.narrow_from: int | None = 0 if self.norm.narrowband else None
        # one extra column carries each frame's speech flag, so a window's speech fraction comes
        # out of the same running-sum means as its features
        self.windows = WindowAssembler(f, f.n_channels + 1)

    def speech(self, feats: np.ndarray, level: np.ndarray) -> np.ndarray:
        """Speech flags of frames (their features and levels in dBFS)."""
        return self.gate(feats, level)

    def push(self, y: np.ndarray) -> Windows:
        """Mono samples at the model's rate -> the windows completed by them."""
        feats, level = self.featurizer.push(y)
        return self.gate.judge(self.push_frames(feats, self.speech(feats, level)))

    def prime(self, feats: np.ndarray, speech: np.ndarray) -> None:
        """Feed frames to the normaliser only: speech heard earlier on the stream (no windows)."""
        self.norm.push(feats, speech, self._band(feats, speech))
        if self.norm.narrowband and self.narrow_from is None:
            self.narrow_from = 0  # heard before any window: every window starts from the narrowband prior

    def _band(self, feats: np.ndarray, speech: np.ndarray) -> int | None:
        return self.band.push(feats, speech) if self.band is not None else None

    @property
    def narrowband(self) -> bool:
        """Whether the channel is being normalised as telephone-band audio."""
        return self.norm.narrowband

    def bands(self, w: Windows) -> list[str] | None:
        """Per window, the prior its features were normalised from: ``"telephone"`` or ``"wideband"``
        (None: the model has no narrowband prior). A window is normalised by the statistics at its
        last frame, so it is telephone from the window that ends on the switching frame on."""
        if not self.norm.has_narrowband:
            return None
        ends = np.asarray(w.starts) + max(int(w.frames), 1) - 1
        at = self.narrow_from
        return ["telephone" if at is not None and e >= at else "wideband" for e in ends]

    def push_frames(self, feats: np.ndarray, speech: np.ndarray) -> Windows:
        """Frame features [n, C] and speech flags [n] -> the windows completed by them."""
        C = self.cfg.n_channels
        first = self.windows.frames_in
        switch = self._band(feats, speech)
        stats = self.norm.push(feats, speech, switch)
        if self.norm.narrowband and self.narrow_from is None:
            self.narrow_from = first + (switch or 0)
        rows = np.concatenate([feats, np.asarray(speech)[:, None].astype(np.float32)], axis=1) if len(feats) else \
            np.zeros((0, C + 1), np.float32)
        starts, means = self.windows.push(rows)
        wf = self.cfg.window_frames
        if len(starts):
            mean, std = stats.at(starts + wf - 1 - first)
            flags = means[:, :, -1]
            k = self.cfg.sub_window_frames
            pause = pauses_before_centre(flags, max(1, self.cfg.hop_frames // k),
                                         k * self.cfg.hop_length / self.cfg.sample_rate)
            return Windows(starts, self.norm.apply(means[:, :, :-1], mean, std), flags.mean(axis=1), wf, pause)
        return Windows(starts, means[:, :, :-1], np.zeros(0), wf)

    def flush(self) -> Windows:
        """The final (possibly short) window over the uncovered tail."""
        starts, means, wf = self.windows.flush()
        if len(starts) == 0:
            return Windows(starts, np.zeros((0, 0, self.cfg.n_channels), np.float32), np.zeros(0), 0)
        mean, std = self.norm.current()
        feats = self.norm.apply(means[:, :, :-1], np.repeat(mean, len(starts), 0), np.repeat(std, len(starts), 0))
        return self.gate.judge(Windows(starts, feats, means[:, :, -1].mean(axis=1), wf))

    def frames(self, feats: np.ndarray, speech: np.ndarray) -> list[Windows]:
        """All windows of a whole clip's frames, as if the clip were streamed to its end.

        The windows are judged as :meth:`push` judges them; the speech detector only has a say when
        ``speech`` came from this analyser's :meth:`speech` (training feeds flags of its own).
        """
        return [w for w in (self.gate.judge(self.push_frames(feats, speech)), self.flush()) if len(w.starts)]


def to_input(x: np.ndarray, layout: str) -> np.ndarray:
    """Windows [w, steps, C] -> the model's input layout (``steps`` as is, ``coefficients`` flattened)."""
    if layout == "coefficients":
        return x.reshape(len(x), -1, 1)
    return x


def classify_windows(predict: Predict, parts: Sequence[Windows], min_fraction: float,
                     n_labels: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Speech flags and probabilities of the windows of several channels or clips.

    A window is speech when at least ``min_fraction`` of its frames are; only speech windows are
    scored (their rows of ``probs``; the others stay NaN). One ``predict`` call per window length
    for all parts together, since one interpreter call of many windows is far cheaper than many.

    Returns:
        per part: (speech [w] bool, probs [w, n_labels] float32)
    """
    out = []
    by_len: dict[int, list[int]] = {}
    for k, p in enumerate(parts):
        speech = np.asarray(p.speech_frac) >= min_fraction
        out.append((speech, np.full((len(p.starts), n_labels), np.nan, np.float32)))
        if len(p.starts):
            by_len.setdefault(p.feats.shape[1], []).append(k)
    for ks in by_len.values():
        batch = [parts[k].feats[out[k][0]] for k in ks]
        if sum(len(b) for b in batch):
            probs = predict(np.concatenate(batch))
            a = 0
            for k, b in zip(ks, batch):
                out[k][1][out[k][0]] = probs[a : a + len(b)]
                a += len(b)
    return out


def clip_probs(probs: np.ndarray, speech: np.ndarray) -> np.ndarray | None:
    """A recording's probabilities: the mean over its speech windows; None when it has none."""
    keep = np.asarray(speech, bool)
    if not keep.any():
        return None
    return np.asarray(probs)[keep].mean(axis=0)
