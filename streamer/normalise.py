"""Per-band normalisation of frame features: none, fixed, or running per stream."""

from __future__ import annotations

import numpy as np

from streamer.config import NormConfig

__all__ = ["Normaliser", "stats_from_frames"]


def stats_from_frames(frames: np.ndarray, speech: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean, standard deviation and count of (speech) frames, per band."""
    x = frames if speech is None else frames[np.asarray(speech, dtype=bool)]
    if len(x) == 0:
        z = np.zeros(frames.shape[1])
        return z, np.ones(frames.shape[1]), 0.0
    return x.mean(axis=0), x.std(axis=0), float(len(x))


class Normaliser:
    """Running per-stream band statistics over speech frames, blended with a prior.

    With ``kind='running'`` the mean and variance after N speech frames are
    ``(n0 * prior + sum) / (n0 + N)``: at the start of a stream the prior (global statistics from
    training) dominates, and as the stream goes on its own statistics take over. A window is
    normalised with the statistics as they stand at the window's last frame, so the same clip gives
    the same features whether it is streamed or processed at once. ``narrowband``: the stream is
    telephone-band audio, so the prior is the model's narrowband one where it has one; a stream found
    to be telephone-band later (``push(..., narrow_from=j)``) switches to it from that frame on.
    """

    def __init__(self, cfg: NormConfig, n_bands: int, narrowband: bool = False):
        self.cfg = cfg
        self.n_bands = n_bands
        self.has_narrowband = cfg.narrowband_mean is not None
        self._wide = self._prior(cfg.mean, cfg.std, n_bands)
        self._narrow = self._prior(cfg.narrowband_mean, cfg.narrowband_std, n_bands) if self.has_narrowband else None
        self.narrowband = False
        self._m0, self._s0 = self._wide
        if narrowband:
            self.to_narrowband()
        n0 = np.asarray(cfg.prior_frames, dtype=np.float64)
        if n0.ndim > 1 or (n0.ndim == 1 and n0.shape != (n_bands,)) or np.any(n0 < 0):
            from streamer.errors import ModelError

            raise ModelError(f"prior_frames must be one non-negative weight or {n_bands} of them")
        self._n0 = np.broadcast_to(n0, (n_bands,))
        self.reset()

    def _prior(self, m0, s0, n_bands: int) -> tuple[np.ndarray, np.ndarray]:
        mean = np.asarray(m0 if m0 is not None else np.zeros(n_bands), dtype=np.float64)
        std = np.asarray(s0 if s0 is not None else np.ones(n_bands), dtype=np.float64)
        if mean.shape != (n_bands,) or std.shape != (n_bands,):
            from streamer.errors import ModelError

            raise ModelError(f"normalisation statistics must have {n_bands} values")
        return mean, np.maximum(std, self.cfg.min_std)

    def to_narrowband(self) -> None:
        """Blend with the narrowband prior from now on (nothing when the model has none)."""
        if self._narrow is not None:
            self.narrowband = True
            self._m0, self._s0 = self._narrow

    def reset(self) -> None:
        """Forget the stream's statistics."""
        self._n = 0.0
        self._sum = np.zeros(self.n_bands)
        self._sq = np.zeros(self.n_bands)

    def push(self, frames: np.ndarray, speech: np.ndarray, narrow_from: int | None = None) -> "BlockStats":
        """Add a block of frames; return cumulative statistics at each of its frames.

        ``narrow_from``: the stream turned out to be telephone-band at this frame of the block; the
        statistics from that frame on blend with the narrowband prior (and so does every later block).
        """
        if narrow_from is not None and not self.narrowband and self._narrow is not None:
            before = (self._m0, self._s0)
            self.to_narrowband()
        else:
            before, narrow_from = None, None
        if self.cfg.kind not in ("running", "running_mean") or len(frames) == 0:
            return BlockStats(self, None, None, None)
        w = np.asarray(speech, dtype=np.float64)
        x = np.asarray(frames, dtype=np.float64)
        n = self._n + np.cumsum(w)
        s = self._sum + np.cumsum(x * w[:, None], axis=0)
        q = self._sq + np.cumsum(x * x * w[:, None], axis=0)
        self._n, self._sum, self._sq = float(n[-1]), s[-1].copy(), q[-1].copy()
        return BlockStats(self, n, s, q, None if before is None else (int(narrow_from), before))

    def current(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std as they stand now."""
        return self._blend(np.array([self._n]), self._sum[None], self._sq[None])

    def _blend(self, n: np.ndarray, s: np.ndarray, q: np.ndarray, m0=None, s0=None) -> tuple[np.ndarray, np.ndarray]:
        n0 = self._n0
        m0 = self._m0 if m0 is None else m0  # [C], or [rows, C] when the prior changed inside a block
        s0 = self._s0 if s0 is None else s0
        tot = n0[None, :] + np.asarray(n, dtype=np.float64)[:, None]
        mean = (n0 * m0 + s) / tot
        ex2 = (n0 * (s0**2 + m0**2) + q) / tot
        if self.cfg.kind == "running_mean":
            # only the mean adapts: a short stream's variance estimate is noisy, and dividing by it
            # amplifies the high-order coefficients
            return mean, np.broadcast_to(s0, mean.shape).copy()
        std = np.sqrt(np.maximum(ex2 - mean**2, self.cfg.min_std**2))
        return mean, std

    def apply(self, windows: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        """Z-score windows [w, steps, C] with per-window statistics [w, C]."""
        if self.cfg.kind == "none":
            return windows
        return ((windows - mean[:, None, :]) / std[:, None, :]).astype(np.float32)


class BlockStats:
    """Cumulative statistics over one pushed block, looked up at window ends."""

    def __init__(self, norm: Normaliser, n, s, q, switch=None):
        self._norm, self._n, self._s, self._q = norm, n, s, q
        self._switch = switch  # (frame, (mean, std) of the prior before it): the prior changed in this block

    def at(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std [len(idx), C] after frame ``idx`` of the block (-1: before the block)."""
        norm = self._norm
        idx = np.asarray(idx, dtype=np.int64)
        if norm.cfg.kind == "none":
            return np.zeros((len(idx), norm.n_bands)), np.ones((len(idx), norm.n_bands))
        if norm.cfg.kind == "fixed":
            return np.repeat(norm._m0[None], len(idx), 0), np.repeat(norm._s0[None], len(idx), 0)
        if self._n is None:
            m, s = norm.current()
            return np.repeat(m, len(idx), 0), np.repeat(s, len(idx), 0)
        if self._switch is None:
            return norm._blend(self._n[idx], self._s[idx], self._q[idx])
        at, (m_before, s_before) = self._switch
        late = (idx >= at)[:, None]
        return norm._blend(self._n[idx], self._s[idx], self._q[idx],
                           np.where(late, norm._m0, m_before), np.where(late, norm._s0, s_before))
