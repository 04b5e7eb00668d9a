"""MFCC frame features and window features from running sums: one code path for training and streaming.

A frame is ``n_fft`` samples every ``hop_length`` samples with no centre padding, so a stream framed
block by block gives exactly the frames of the whole signal framed at once. Each frame's MFCC is
computed once; a window's features are means of ``sub_window_frames`` consecutive frames (its model
time steps), taken from a cumulative sum, so overlapping windows cost nothing extra.

Log-mel uses ``10*log10(max(S, 1e-10))`` without librosa's ``top_db`` clamp, which depends on the
loudest frame of the whole signal and so cannot be computed on a stream. With that one parameter
fixed, ``frame_features`` equals ``librosa.feature.mfcc(S=librosa.power_to_db(melspectrogram(...,
center=False), top_db=None))`` (tests/test_features.py proves it); it is our own code because a
block-wise float32 path is several times faster and never holds a whole file's spectrogram. The
mel filterbank and the DCT are built here too (parity with ``librosa.filters.mel`` and
``scipy.fft.dct`` is tested) because importing librosa costs about 1.4 s of start-up.

With ``FeatureConfig.pitch`` each frame gets two prosody channels, read from the power spectrum the
MFCCs already need (one inverse FFT more a frame, where ``librosa.yin`` would cost several times the
whole MFCC path): the autocorrelation divided by the Hann window's own (Boersma 1993), its best lag
between 60 and 500 Hz with Praat's small bonus for higher candidates against octave errors, refined by a
parabola. Channels: log2 of that frequency and the normalised autocorrelation there (voicing strength,
about 1 on a clean vowel, near 0 on noise). Agreement with ``librosa.yin`` on voiced speech is tested.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.fft

from streamer.config import FeatureConfig

__all__ = [
    "mel_edges",
    "mel_basis",
    "dct_matrix",
    "frames_to_features",
    "frame_features",
    "pitch_from_power",
    "FrameFeaturizer",
    "window_means",
    "window_starts",
    "WindowAssembler",
]

_AMIN = 1e-10
PITCH_FMIN, PITCH_FMAX = 60.0, 500.0  # Hz: the search range of the pitch channels
_OCTAVE_COST = 0.01  # Praat's default: strength bonus per octave up, against picking a subharmonic
_CHUNK_FRAMES = 2048  # frames per FFT batch: bounds the working set (~8 MB at n_fft 1024)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    # Slaney's scale, as librosa's default (htk=False): linear below 1 kHz, logarithmic above
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    lin = m * (200.0 / 3)
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, log, lin)


def mel_edges(cfg: FeatureConfig) -> np.ndarray:
    """The n_mels + 2 frequencies (Hz) of the filterbank's triangles: band k spans edges k..k+2, centred on k+1."""
    fmax = cfg.fmax if cfg.fmax is not None else cfg.sample_rate / 2.0
    return _mel_to_hz(np.linspace(_hz_to_mel(cfg.fmin), _hz_to_mel(fmax), cfg.n_mels + 2))


@lru_cache(maxsize=16)
def mel_basis(cfg: FeatureConfig) -> np.ndarray:
    """Slaney-normalised triangular mel filterbank, transposed for ``power @ basis``.

    Equal to ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax).T`` (tested).

    Returns:
        np.ndarray [shape=(n_fft // 2 + 1, n_mels), dtype=float32]
    """
    fft_freqs = np.linspace(0, cfg.sample_rate / 2.0, cfg.n_fft // 2 + 1)
    mel_f = mel_edges(cfg)
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return np.ascontiguousarray(weights.T, dtype=np.float32)


@lru_cache(maxsize=16)
def dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II as a matrix: ``x @ D`` equals ``scipy.fft.dct(x, type=2, norm='ortho')[..., :n_out]``."""
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    d = np.cos(np.pi * (2 * n + 1) * k / (2.0 * n_in)) * np.sqrt(2.0 / n_in)
    d[:, 0] /= np.sqrt(2.0)
    return np.ascontiguousarray(d, dtype=np.float32)


@lru_cache(maxsize=16)
def _hann(n_fft: int) -> np.ndarray:
    # periodic Hann, as librosa's stft uses (scipy.signal.get_window('hann', n, fftbins=True))
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


@lru_cache(maxsize=16)
def _pitch_lags(cfg: FeatureConfig) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Lag range (one lag of margin each side for the parabola), 1/window autocorrelation, octave bonus."""
    lo = max(2, int(np.floor(cfg.sample_rate / PITCH_FMAX)) - 1)
    hi = min(cfg.n_fft // 2, int(np.ceil(cfg.sample_rate / PITCH_FMIN)) + 1)
    w = _hann(cfg.n_fft).astype(np.float64)
    rw = np.fft.irfft(np.abs(np.fft.rfft(w)) ** 2, n=cfg.n_fft)
    lags = np.arange(lo, hi + 1)
    inv_rw = (rw[0] / rw[lags]).astype(np.float32)
    bonus = (-_OCTAVE_COST * np.log2(PITCH_FMIN * lags / cfg.sample_rate)).astype(np.float32)
    return lo, hi, inv_rw, bonus


def pitch_from_power(power: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Prosody channels of frames from their Hann-windowed power spectra.

    Args:
        power: np.ndarray [shape=(n, n_fft // 2 + 1)], ``|rfft(frame * hann)|**2``.

    Returns:
        np.ndarray [shape=(n, 2), dtype=float32]: log2 f0 (Hz) and voicing strength (about -1..1).
    """
    lo, hi, inv_rw, bonus = _pitch_lags(cfg)
    acf = scipy.fft.irfft(power, n=cfg.n_fft, axis=1, workers=1)
    r0 = np.maximum(acf[:, :1], 1e-20)
    r = (acf[:, lo : hi + 1] / r0).astype(np.float32) * inv_rw
    k = np.argmax(r[:, 1:-1] + bonus[1:-1], axis=1) + 1
    rows = np.arange(len(r))
    a, b, c = r[rows, k - 1], r[rows, k], r[rows, k + 1]
    den = a - 2.0 * b + c
    off = np.where(den < 0, 0.5 * (a - c) / np.where(den < 0, den, -1.0), 0.0)
    off = np.clip(off, -0.5, 0.5)
    strength = b - 0.25 * (a - c) * off
    lag = lo + k + off
    out = np.empty((len(r), 2), dtype=np.float32)
    out[:, 0] = np.log2(cfg.sample_rate / lag)
    out[:, 1] = np.where(acf[:, 0] > 1e-12, strength, 0.0)
    return out


def frames_to_features(frames: np.ndarray, cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """MFCC (and, with ``cfg.pitch``, the prosody channels) and level of framed audio.

    Args:
        frames: np.ndarray [shape=(n, n_fft)], audio frames at ``cfg.sample_rate``.
        cfg: feature parameters.

    Returns:
        mfcc: np.ndarray [shape=(n, n_channels), dtype=float32], n_mfcc MFCCs then log2 f0 and voicing.
        level_db: np.ndarray [shape=(n,), dtype=float32], frame power in dBFS (unwindowed).
    """
    n = frames.shape[0]
    C = cfg.n_mfcc
    mfcc = np.empty((n, cfg.n_channels), dtype=np.float32)
    level = np.empty(n, dtype=np.float32)
    if n == 0:
        return mfcc, level
    basis = mel_basis(cfg)
    dct = dct_matrix(cfg.n_mels, cfg.n_mfcc)
    win = _hann(cfg.n_fft)
    for a in range(0, n, _CHUNK_FRAMES):
        f = np.asarray(frames[a : a + _CHUNK_FRAMES], dtype=np.float32)
        power_in = np.einsum("ij,ij->i", f, f) / cfg.n_fft
        level[a : a + len(f)] = 10.0 * np.log10(power_in + 1e-12)
        spec = scipy.fft.rfft(f * win, axis=1, workers=1)  # 3x faster than numpy.fft on float32
        power = spec.real**2 + spec.imag**2
        mel = power.astype(np.float32, copy=False) @ basis
        np.maximum(mel, _AMIN, out=mel)
        logmel = 10.0 * np.log10(mel)
        mfcc[a : a + len(f), :C] = logmel @ dct
        if cfg.pitch:
            mfcc[a : a + len(f), C:] = pitch_from_power(power, cfg)
    return mfcc, level


def _frame_view(y: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    n = 1 + (len(y) - n_fft) // hop if len(y) >= n_fft else 0
    if n == 0:
        return np.zeros((0, n_fft), dtype=np.float32)
    return np.lib.stride_tricks.sliding_window_view(y, n_fft)[:: hop][:n]


def frame_features(y: np.ndarray, cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """MFCC and level of every whole frame of a mono signal.

    Args:
        y: np.ndarray [shape=(n,)], mono audio at ``cfg.sample_rate``.

    Returns:
        mfcc: np.ndarray [shape=(n_frames, n_channels)], level_db: np.ndarray [shape=(n_frames,)]
    """
    y = np.ascontiguousarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"frame_features expects mono audio, got shape {y.shape}")
    return frames_to_features(_frame_view(y, cfg.n_fft, cfg.hop_length), cfg)


class FrameFeaturizer:
    """Streaming form of :func:`frame_features`: push blocks of any size, get the frames they complete."""

    def __init__(self, cfg: FeatureConfig):
        self.cfg = cfg
        self._tail = np.zeros(0, dtype=np.float32)
        self.frames_out = 0

    def reset(self) -> None:
        """Forget the stream so far."""
        self._tail = np.zeros(0, dtype=np.float32)
        self.frames_out = 0

    def push(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add mono samples; return features of the frames now complete (possibly none)."""
        buf = np.concatenate([self._tail, np.asarray(y, dtype=np.float32).reshape(-1)])
        frames = _frame_view(buf, self.cfg.n_fft, self.cfg.hop_length)
        n = frames.shape[0]
        out = frames_to_features(frames, self.cfg)
        self._tail = buf[n * self.cfg.hop_length :].copy()
        self.frames_out += n
        return out


def window_starts(n_frames: int, cfg: FeatureConfig, first: int = 0) -> np.ndarray:
    """Start frames of the whole windows in ``n_frames`` frames, from ``first`` every hop."""
    last = n_frames - cfg.window_frames
    if last < first:
        return np.zeros(0, dtype=np.int64)
    return np.arange(first, last + 1, cfg.hop_frames, dtype=np.int64)


def window_means(
    frames: np.ndarray, starts: np.ndarray, cfg: FeatureConfig, n_window_frames: int | None = None
) -> np.ndarray:
    """Window features: means of ``sub_window_frames`` consecutive frames, from one cumulative sum.

    Args:
        frames: np.ndarray [shape=(n, C)], frame features.
        starts: np.ndarray [shape=(w,)], start frame of each window (each window must fit).
        cfg: feature parameters (``sub_window_frames``, ``window_frames``).
        n_window_frames: frames per window, if not ``cfg.window_frames`` (a short final window).

    Returns:
        np.ndarray [shape=(w, steps, C), dtype=float32], ``steps = n_window_frames // k``.
    """
    k = cfg.sub_window_frames
    wf = n_window_frames or cfg.window_frames
    steps = wf // k
    starts = np.asarray(starts, dtype=np.int64)
    if len(starts) == 0 or steps == 0:
        return np.zeros((len(starts), steps, frames.shape[1]), dtype=np.float32)
    if k == 1:
        idx = starts[:, None] + np.arange(steps)[None, :]
        return frames[idx].astype(np.float32, copy=False)
    lo, hi = int(starts.min()), int(starts.max()) + steps * k
    csum = np.zeros((hi - lo + 1, frames.shape[1]), dtype=np.float64)
    np.cumsum(frames[lo:hi], axis=0, out=csum[1:])
    edges = (starts - lo)[:, None] + k * np.arange(steps + 1)[None, :]
    c = csum[edges]
    return ((c[:, 1:] - c[:, :-1]) / k).astype(np.float32)


class WindowAssembler:
    """Cuts a stream of frame rows into windows, keeping only the frames a future window needs.

    Rows are any per-frame vectors (MFCC plus extra columns such as a speech flag); the caller
    splits them after :meth:`push`. Memory is bounded by one window of frames.
    """

    def __init__(self, cfg: FeatureConfig, width: int):
        self.cfg = cfg
        self._buf = np.zeros((0, width), dtype=np.float32)
        self._buf_start = 0  # absolute index of _buf[0]
        self._next = 0  # absolute start of the next window
        self.frames_in = 0
        self.windows_out = 0
        self._last_end = 0

    def push(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add frame rows; return (absolute start frames [w], window means [w, steps, width])."""
        cfg = self.cfg
        if len(rows):
            self._buf = np.concatenate([self._buf, np.asarray(rows, dtype=np.float32)])
        self.frames_in += len(rows)
        starts = window_starts(self.frames_in - self._buf_start, cfg, self._next - self._buf_start)
        feats = window_means(self._buf, starts, cfg)
        starts = starts + self._buf_start
        if len(starts):
            self._next = int(starts[-1]) + cfg.hop_frames
            self._last_end = int(starts[-1]) + cfg.window_frames
            self.windows_out += len(starts)
        keep_from = min(self._next, max(0, self.frames_in - cfg.window_frames))
        if keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start :]
            self._buf_start = keep_from
        return starts, feats

    def flush(self, min_frames: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
        """A final window over the stream's uncovered tail, if it holds enough frames.

        When the stream ended more than half a hop after the last window, the final window is the
        last ``window_frames`` frames; a stream shorter than one window gets one short window over
        all its frames (at least ``min_frames``, default a quarter window).

        Returns:
            (starts [0 or 1], means [0 or 1, steps, width], frames per window)
        """
        cfg = self.cfg
        k = cfg.sub_window_frames
        empty = (np.zeros(0, dtype=np.int64), np.zeros((0, 0, self._buf.shape[1]), np.float32), 0)
        if min_frames is None:
            min_frames = max(k, cfg.window_frames // 4)
        if self.windows_out == 0:
            n = (self.frames_in - self._buf_start) // k * k
            if n < min_frames or self._buf_start != 0:
                return empty
            start = np.array([0], dtype=np.int64)
            self.windows_out += 1
            return start, window_means(self._buf, start, cfg, n), n
        if self.frames_in - self._last_end <= cfg.hop_frames // 2:
            return empty
        start = self.frames_in - cfg.window_frames
        rel = np.array([start - self._buf_start], dtype=np.int64)
        self._last_end = self.frames_in
        self.windows_out += 1
        return rel + self._buf_start, window_means(self._buf, rel, cfg), cfg.window_frames
