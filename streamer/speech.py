"""Speech detection: the energy gate, then (when the model's metadata names one) a learned detector.

The energy gate (:mod:`streamer.gate`) flags loud-enough frames; it feeds the running normaliser
exactly as in training, and a window with too few flagged frames is not speech. A tone, a hum,
hold music or line noise is loud enough, though, so a model whose ``gate.detector`` names a speech
head has every window that passed the energy gate judged by that head as well.

A head reads one of two inputs (``gate.detector.inputs``), both made from the frame features the
streamer already has (MFCCs, log-f0 and voicing, frame level), cut into the analyser's windows by
their own :class:`~streamer.features.WindowAssembler`, so a stream's windows are the same whatever
the block sizes:

- ``frames-v1`` (model 2.x from 2.1.0): the window's frames themselves, a few channels each (spectral
  envelope, level, fine spectral ripple, pitch, voicing, the energy gate's flag, see
  :func:`frame_channels`). The head is two small convolutional networks over time that see how level,
  spectrum and pitch move across the window (syllables, glides, onsets), which a note, a drum loop or
  a fan does not do the same way; it normalises the window itself (spectral shape and pitch relative
  to the window's own means, level relative to its peak).
- ``summary-v1`` (models 1.6-2.0): a summary of the window, means of per-frame rows
  (:func:`frame_rows`, :func:`summarise`): spectral shape and spread, flux, level modulation, how much
  is voiced and how the pitch moves. Only frames the energy gate passes count.

Training (``python -m tools.train_speech``) and measurement (``python -m tools.speech_eval``) make a
head's inputs with :class:`DetectorInputs` below, the same code the streamer runs.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from streamer.config import FeatureConfig, ModelMeta, SpeechConfig
from streamer.errors import ModelError
from streamer.features import WindowAssembler
from streamer.gate import SpeechGate

__all__ = ["FRAMES", "INPUTS", "SUMMARY", "DetectorInputs", "RowState", "SpeechDetector", "SpeechHead", "describe",
           "detector_features", "frame_channels", "frame_rows", "summarise", "summary_names"]

SUMMARY = "summary-v1"
FRAMES = "frames-v1"
INPUTS = (FRAMES, SUMMARY)
_N_CEP = 12  # cepstral coefficients c1..c12 describe the spectral envelope (c0 is the level)
_VOICED = 0.5  # voicing strength above which a frame counts as voiced
_EPS = 1e-6


def detector_features(f: FeatureConfig, inputs: str = FRAMES) -> dict[str, Any]:
    """The frame parameters a head on ``inputs`` trained on ``f`` records in its metadata."""
    keys = SpeechConfig.FEATURE_KEYS + (SpeechConfig.SEQUENCE_KEYS if inputs == FRAMES else ())
    return {k: getattr(f, k) for k in keys}


#: columns of :func:`frame_channels`: c0..c12, level, ripple, log2 f0, voicing, the gate's flag
FRAME_COLUMNS = tuple(f"c{i}" for i in range(13)) + ("level", "ripple", "log2_f0", "voicing", "gated")


def frame_channels(feats: np.ndarray, level: np.ndarray, gate: np.ndarray, f: FeatureConfig) -> np.ndarray:
    """Per-frame inputs of a ``frames-v1`` head: the columns of :data:`FRAME_COLUMNS`.

    Args:
        feats: np.ndarray [shape=(n, n_channels)], frame features (MFCCs, then log2 f0 and voicing).
        level: np.ndarray [shape=(n,)], frame levels in dBFS.
        gate: np.ndarray [shape=(n,)], the energy gate's flags.
        f: the frame parameters.

    Returns:
        np.ndarray [shape=(n, 18), dtype=float32]; the head zeroes frames the gate did not pass itself.
    """
    n = len(feats)
    c = np.asarray(feats[:, : 1 + _N_CEP], np.float32)
    hi = np.asarray(feats[:, 1 + _N_CEP : f.n_mfcc], np.float32)
    # the fine ripple of the spectrum (high cepstra): harmonics of a tone or a note stand out in it
    ripple = np.sqrt((hi * hi).mean(axis=1)) if hi.shape[1] else np.zeros(n, np.float32)
    if f.pitch:
        pitch = np.asarray(feats[:, f.n_mfcc : f.n_mfcc + 2], np.float32)
    else:
        pitch = np.zeros((n, 2), np.float32)
    return np.concatenate([c, np.asarray(level, np.float32)[:, None], ripple[:, None], pitch,
                           np.asarray(gate, np.float32)[:, None]], axis=1)


_LAG = 5  # frames: changes over ~100 ms follow syllables and phones, not the frame-to-frame jitter
_FLOOR_RISE_DB_PER_S = 3.0  # how fast the tracked noise floor may rise (it falls at once)
_SMOOTH_OCT = 0.06  # octaves a frame: a pitch moving less than this is a continuous contour
_LOW_F0 = float(np.log2(75.0))  # log2 Hz: lower than a speaking voice goes
_MIN_VOICED = 0.05  # share of a window's gated frames below which its pitch statistics are faded out


def _row_width(f: FeatureConfig) -> int:
    return 1 + 2 * _N_CEP + 9 + (10 if f.pitch else 0)


class RowState:
    """What :func:`frame_rows` carries from one block to the next: recent frames and the level floor."""

    def __init__(self, history: np.ndarray, floor: float):
        self.history = history  # the last _LAG frames' [c1..c12, level, log2 f0, voiced]
        self.floor = floor


def frame_rows(feats: np.ndarray, level: np.ndarray, gate: np.ndarray, f: FeatureConfig,
               prev: RowState | None) -> tuple[np.ndarray, RowState | None]:
    """Per-frame rows whose window means :func:`summarise` turns into a window summary.

    Args:
        feats: np.ndarray [shape=(n, n_channels)], frame features (MFCCs, then log2 f0 and voicing).
        level: np.ndarray [shape=(n,)], frame levels in dBFS.
        gate: np.ndarray [shape=(n,)], the energy gate's flags; other frames give zero rows.
        f: the frame parameters.
        prev: the state after the previous block (None at a stream's start).

    Returns:
        rows [n, width] float32, and the state for the next block.
    """
    n = len(feats)
    width = _row_width(f)
    if n == 0:
        return np.zeros((0, width), np.float32), prev
    c = np.asarray(feats[:, 1 : 1 + _N_CEP], np.float64)
    lv = np.asarray(level, np.float64)
    if f.pitch:
        f0 = np.asarray(feats[:, f.n_mfcc], np.float64)
        v = np.asarray(feats[:, f.n_mfcc + 1], np.float64)
    else:
        f0 = v = np.zeros(n)
    u = (v > _VOICED).astype(np.float64)
    cur = np.concatenate([c, lv[:, None], f0[:, None], u[:, None]], axis=1)
    hist = np.repeat(cur[:1], _LAG, axis=0) if prev is None else prev.history
    allf = np.concatenate([hist, cur], axis=0)
    before = allf[_LAG - 1 : _LAG - 1 + n]  # the frame before each
    lagged = allf[:n]  # the frame _LAG before each
    # noise floor: the level's running minimum, allowed to rise slowly (minimum statistics);
    # floor[i] = min(level[i], floor[i-1] + r) in one pass, as the energy gate tracks its peak
    r = _FLOOR_RISE_DB_PER_S / f.frame_rate
    ramp = r * np.arange(1, n + 1)
    start = lv[0] if prev is None else prev.floor
    floor = np.minimum(np.minimum.accumulate(lv - ramp), start) + ramp
    above = lv - floor
    g = np.asarray(gate, np.float64)
    hi = np.asarray(feats[:, 1 + _N_CEP : f.n_mfcc], np.float64)
    cols = [
        g[:, None],
        g[:, None] * c,
        g[:, None] * c * c,
        (g * np.abs(c - before[:, :_N_CEP]).mean(axis=1))[:, None],  # spectral flux
        (g * lv)[:, None],
        (g * lv * lv)[:, None],
        (g * np.abs(lv - before[:, _N_CEP]))[:, None],  # level jitter
        (g * (hi * hi).mean(axis=1) if hi.shape[1] else np.zeros(n))[:, None],  # fine spectral ripple (tones)
        (g * np.abs(lv - lagged[:, _N_CEP]))[:, None],  # level modulation over ~100 ms
        (g * np.abs(c - lagged[:, :_N_CEP]).mean(axis=1))[:, None],  # spectral change over ~100 ms
        (g * above)[:, None],  # height above the noise floor
        (g * above * above)[:, None],
    ]
    if f.pitch:
        uu = u * before[:, _N_CEP + 2]  # voiced after voiced: pitch movement is defined
        cols += [(g * v)[:, None], (g * v * v)[:, None], (g * u)[:, None], (g * u * f0)[:, None],
                 (g * u * f0 * f0)[:, None], (g * uu * np.abs(f0 - before[:, _N_CEP + 1]))[:, None],
                 (g * uu)[:, None],
                 (g * u * (1 - before[:, _N_CEP + 2]))[:, None],  # voiced onsets: syllables
                 # a pitch that moves smoothly (speech, notes) rather than jumping (voiced-looking noise)
                 (g * uu * (np.abs(f0 - before[:, _N_CEP + 1]) < _SMOOTH_OCT))[:, None],
                 (g * u * (f0 < _LOW_F0))[:, None]]  # voiced below any voice: kick drums, hum, rumble
    rows = np.concatenate(cols, axis=1).astype(np.float32)
    return rows, RowState(allf[-_LAG:].copy(), float(floor[-1]))


def summary_names(f: FeatureConfig) -> list[str]:
    """Names of the window summary's values, in order."""
    names = ["gated"] + [f"c{i}_mean" for i in range(1, _N_CEP + 1)] + [f"c{i}_std" for i in range(1, _N_CEP + 1)]
    names += ["flux", "level_std", "level_jitter", "ripple", "level_mod", "spectral_change", "above_floor",
              "above_floor_std"]
    if f.pitch:
        names += ["voicing_mean", "voicing_std", "voiced", "f0_std", "f0_glide", "voiced_pairs", "onsets",
                  "smooth_pitch", "low_pitch"]
    return names


def summarise(means: np.ndarray, f: FeatureConfig) -> np.ndarray:
    """Window means of :func:`frame_rows` [w, width] -> window summaries [w, len(summary_names)].

    Means are taken over the gated frames only (a window's share of them is the first value).
    """
    m = np.asarray(means, np.float64)
    g = m[:, :1]
    gs = np.maximum(g, _EPS)
    k = _N_CEP
    mc = m[:, 1 : 1 + k] / gs
    sc = np.sqrt(np.maximum(m[:, 1 + k : 1 + 2 * k] / gs - mc * mc, 0.0))
    j = 1 + 2 * k
    flux = m[:, j : j + 1] / gs
    ml = m[:, j + 1 : j + 2] / gs
    sl = np.sqrt(np.maximum(m[:, j + 2 : j + 3] / gs - ml * ml, 0.0))
    jit = m[:, j + 3 : j + 4] / gs
    ripple = np.sqrt(m[:, j + 4 : j + 5] / gs)
    mod = m[:, j + 5 : j + 6] / gs
    change = m[:, j + 6 : j + 7] / gs
    ma = m[:, j + 7 : j + 8] / gs
    sa = np.sqrt(np.maximum(m[:, j + 8 : j + 9] / gs - ma * ma, 0.0))
    out = [g, mc, sc, flux, sl, jit, ripple, mod, change, ma, sa]
    if f.pitch:
        j += 9
        mv = m[:, j : j + 1] / gs
        sv = np.sqrt(np.maximum(m[:, j + 1 : j + 2] / gs - mv * mv, 0.0))
        u = m[:, j + 2 : j + 3]
        us = np.maximum(u, _EPS)
        mf = m[:, j + 3 : j + 4] / us
        sf = np.sqrt(np.maximum(m[:, j + 4 : j + 5] / us - mf * mf, 0.0))
        uu = m[:, j + 6 : j + 7]
        glide = m[:, j + 5 : j + 6] / np.maximum(uu, _EPS)
        onsets = m[:, j + 7 : j + 8] / gs
        smooth = m[:, j + 8 : j + 9] / np.maximum(uu, _EPS)
        low = m[:, j + 9 : j + 10] / us
        # a pitch statistic of one or two voiced frames is noise: fade them in with the voiced share
        cu = np.minimum(1.0, u / gs / _MIN_VOICED)
        cuu = np.minimum(1.0, uu / gs / _MIN_VOICED)
        out += [mv, sv, u / gs, sf * cu, glide * cuu, uu / gs, onsets, smooth * cuu, low * cu]
    return np.concatenate(out, axis=1).astype(np.float32)


class DetectorInputs:
    """How a head's inputs are made from frames: rows per frame, windows of rows, one input per window.

    One instance per stream (the rows of ``summary-v1`` carry state from block to block).
    """

    def __init__(self, inputs: str, f: FeatureConfig):
        if inputs not in INPUTS:
            raise ModelError(f"unknown speech detector inputs {inputs!r}")
        self.inputs = inputs
        self.cfg = f
        self.width = len(FRAME_COLUMNS) if inputs == FRAMES else _row_width(f)
        self.windows = WindowAssembler(f, self.width)
        self._prev: RowState | None = None

    def shape(self) -> tuple[int, ...]:
        """One window's input to the head."""
        if self.inputs == FRAMES:
            return (self.cfg.window_steps, self.width)
        return (len(summary_names(self.cfg)),)

    def rows(self, feats: np.ndarray, level: np.ndarray, gate: np.ndarray) -> np.ndarray:
        """The rows of a block of frames (in stream order, block after block)."""
        if self.inputs == FRAMES:
            return frame_channels(feats, level, gate, self.cfg)
        rows, self._prev = frame_rows(feats, level, gate, self.cfg, self._prev)
        return rows

    def head_input(self, means: np.ndarray) -> np.ndarray:
        """Windows' step means of rows [w, steps, width] -> the head's inputs [w, *shape]."""
        if self.inputs == SUMMARY:
            return summarise(means.mean(axis=1), self.cfg)
        steps = self.cfg.window_steps
        if means.shape[1] < steps:  # a short final window: the missing frames are silence, as in a pause
            pad = np.zeros((len(means), steps - means.shape[1], self.width), np.float32)
            means = np.concatenate([means, pad], axis=1)
        return np.ascontiguousarray(means, np.float32)

    def push(self, feats: np.ndarray, level: np.ndarray, gate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A block of frames in; (start frames [w], head inputs [w, *shape]) of the windows it completes."""
        starts, means = self.windows.push(self.rows(feats, level, gate))
        return starts, self.head_input(means) if len(starts) else np.zeros((0,) + self.shape(), np.float32)

    def flush(self) -> tuple[np.ndarray, np.ndarray, int]:
        """The final window over the stream's tail, as the analyser cuts it: (starts, inputs, frames)."""
        starts, means, frames = self.windows.flush()
        if len(starts) == 0:
            return starts, np.zeros((0,) + self.shape(), np.float32), 0
        return starts, self.head_input(means), frames


class SpeechHead:
    """The detector's TFLite model: windows' inputs [w, *shape] in, speech probabilities [w] out."""

    def __init__(self, path: Path, shape: tuple[int | None, ...]):
        from streamer.classifier import load_interpreter_class

        Interpreter, _ = load_interpreter_class()
        try:
            self._interp = Interpreter(model_path=str(path), num_threads=1)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelError(f"cannot load speech detector {path}: {str(exc).splitlines()[0]}") from None
        inp, out = self._interp.get_input_details(), self._interp.get_output_details()
        have = tuple(int(v) for v in inp[0]["shape"][1:]) if len(inp) == 1 else ()
        # None: any length (a head on frames takes its own number of frames, see SpeechDetector)
        if len(inp) != 1 or len(out) != 1 or len(have) != len(shape) or \
                any(w is not None and w != h for w, h in zip(shape, have)):
            dims = ", ".join(str(v) for v in ("w",) + tuple("T" if v is None else v for v in shape))
            raise ModelError(f"speech detector {path} must take [{dims}] inputs and give one output")
        self.shape = have
        self._in, self._out = inp[0]["index"], out[0]["index"]
        self._rows = -1
        # one interpreter serves every channel and ingest thread: its tensors are not reentrant
        self._lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Speech probability of each window's input."""
        if len(x) == 0:
            return np.zeros(0, np.float32)
        with self._lock:
            if len(x) != self._rows:
                self._interp.resize_tensor_input(self._in, [len(x), *x.shape[1:]], strict=False)
                if self._rows < 0:  # the runtime's XNNPACK INFO line would break one-line stderr
                    from streamer.classifier import _quiet_stderr

                    with _quiet_stderr():
                        self._interp.allocate_tensors()
                else:
                    self._interp.allocate_tensors()
                self._rows = len(x)
            self._interp.set_tensor(self._in, np.ascontiguousarray(x, np.float32))
            self._interp.invoke()
            return np.array(self._interp.get_tensor(self._out), np.float32).reshape(len(x), -1)[:, -1]


_HEADS: dict[tuple[str, tuple[int | None, ...]], SpeechHead] = {}
_HEADS_LOCK = threading.Lock()


def _head(path: Path, shape: tuple[int | None, ...]) -> SpeechHead:
    # one interpreter per file: a call centre's hundreds of channels share it (calls are tiny and
    # serialised by the GIL-holding runtime call; each call resizes only when the batch changes)
    key = (str(path), tuple(shape))
    with _HEADS_LOCK:
        if key not in _HEADS:
            _HEADS[key] = SpeechHead(path, tuple(shape))
        return _HEADS[key]


class SpeechDetector:
    """One channel's speech detection: energy flags per frame, and a verdict per window.

    Called like the energy gate (``detector(feats, level) -> frame flags``); :meth:`judge` then
    gives the windows the head rejects a speech fraction of zero, and those it accepts at least the
    gate's ``min_fraction``. Without ``gate.detector`` in the metadata it is the energy gate alone.
    """

    def __init__(self, meta: ModelMeta):
        f = meta.features
        self.cfg = f
        self.energy = SpeechGate(meta.gate, f)
        self.spec: SpeechConfig | None = meta.gate.detector
        self.head: SpeechHead | None = None
        if self.spec is None:
            return
        self.spec.validate(f, meta.model_path)
        path = self.spec.path(meta.model_path) if meta.model_path is not None else Path(self.spec.model)
        self.inputs = DetectorInputs(self.spec.inputs, f)
        shape = self.inputs.shape()
        # a head on frames learned windows of its own length: other window lengths (label --window)
        # are judged in pieces of that length (see _probability)
        self.head = _head(path, (None,) + shape[1:] if self.spec.inputs == FRAMES else shape)
        self._frames: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def __call__(self, feats: np.ndarray, level: np.ndarray) -> np.ndarray:
        """Energy flags of frames (for the normaliser and the speech fraction); keeps the frames for the head."""
        flags = self.energy(level)
        if self.head is not None and len(flags):
            # rows are made when a window is due (see judge): a live stream pushes one frame at a
            # time, and per-call overhead would otherwise cost more than the work
            self._frames.append((feats, level, flags))
        return flags

    def _windows(self) -> tuple[np.ndarray, np.ndarray]:
        """Turn the kept frames into the detector's windows: (starts, head inputs)."""
        if not self._frames:
            return np.zeros(0, np.int64), np.zeros((0,) + self.inputs.shape(), np.float32)
        parts = self._frames
        self._frames = []
        feats, level, flags = (np.concatenate([p[i] for p in parts]) for i in range(3))
        return self.inputs.push(feats, level, flags)

    def _probability(self, x: np.ndarray) -> np.ndarray:
        """Speech probability of windows' inputs; frames of windows longer than the head's are cut into
        pieces of its length (half overlapping, the last ending with the window) and the window is as
        likely speech as its likeliest piece; shorter ones are padded with silence."""
        assert self.head is not None
        if self.spec.inputs != FRAMES or x.shape[1] == self.head.shape[0]:
            return self.head(x)
        n, length, width = x.shape
        t = self.head.shape[0]
        if length < t:
            return self.head(np.concatenate([x, np.zeros((n, t - length, width), np.float32)], axis=1))
        k = 1 + -(-(length - t) // max(t // 2, 1))
        offsets = np.round(np.linspace(0, length - t, k)).astype(int)
        pieces = np.stack([x[:, o : o + t] for o in offsets], axis=1).reshape(n * k, t, width)
        return self.head(pieces).reshape(n, k).max(axis=1)

    def judge(self, windows: Any) -> Any:
        """The analyser's windows (:class:`streamer.analysis.Windows`) as the head judges them: speech
        fraction zero where it finds no speech, at least the gate's ``min_fraction`` where it does.

        Call it with every batch of windows the analyser cuts after frames went through
        ``__call__``, and with the final window of :meth:`ChannelAnalyzer.flush`. Windows of frames
        whose flags came from elsewhere (training feeds cached frames) pass unchanged.
        """
        starts = np.asarray(windows.starts)
        if self.head is None or len(starts) == 0 or (self.inputs.windows.frames_in == 0 and not self._frames):
            return windows
        mine, x = self._windows()
        if len(mine) == 0:  # the final window over the stream's tail
            mine, x, _ = self.inputs.flush()
        if not np.array_equal(mine, starts):
            raise RuntimeError("speech detector windows out of step with the analyser's")
        frac = np.asarray(windows.speech_frac, np.float64).copy()
        todo = np.flatnonzero(frac >= self.spec.min_fraction)
        verdict = np.zeros(len(frac), bool)
        if len(todo):
            verdict[todo] = self._probability(x[todo]) >= self.spec.threshold
        # the head decides: what it keeps passes the gate's min_fraction, what it rejects has none
        frac = np.where(verdict, np.maximum(frac, self.energy.gate.min_fraction), 0.0)
        return windows._replace(speech_frac=frac)


def describe(meta: ModelMeta) -> list[str]:
    """Lines for ``emostream info``: the speech detection in use and its measured figures."""
    g = meta.gate
    energy = (f"energy gate: frames above {g.abs_db:g} dBFS and within {g.rel_db:g} dB of the recent peak")
    det = g.detector
    if det is None:
        return [energy + f"; a window is speech when {100 * g.min_fraction:.0f} % of its frames are "
                "(no speech detector: tones, noise and music count as speech)"]
    lines = [energy, f"detector: {det.model} ({det.inputs}) judges windows with {100 * det.min_fraction:.0f} % "
             f"of frames gated; speech when p >= {det.threshold:g}"]
    figs = dict(det.figures)

    def pct(key: str) -> str:
        v = figs.get(key)
        return f"{100 * v:.1f} %" if isinstance(v, (int, float)) else "?"

    if figs:
        lines.append(f"non-speech windows rejected {pct('rejected')} (16 kHz {pct('rejected_16k')}, "
                     f"8 kHz mu-law {pct('rejected_8k_mulaw')})")
        lines.append(f"speech time kept {pct('kept')} (clean {pct('kept_16k')}, 0-20 dB SNR {pct('kept_16k_noisy')}, "
                     f"8 kHz mu-law {pct('kept_8k_mulaw')}, both {pct('kept_8k_mulaw_noisy')})")
        if "cost_share" in figs:
            lines.append(f"cost {pct('cost_share')} of a window's processing reading a file, "
                         f"{pct('cost_share_live')} live (one 20 ms hop a block)")
        if "measured_on" in figs:
            lines.append(f"measured on {figs['measured_on']}")
    return lines
