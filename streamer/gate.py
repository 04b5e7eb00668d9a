"""Energy speech gate: which frames (and so which windows) hold speech."""

from __future__ import annotations

import numpy as np

from streamer.config import FeatureConfig, GateConfig

__all__ = ["SpeechGate", "speech_fraction"]


class SpeechGate:
    """Marks frames as speech when they are above an absolute floor and near the recent peak.

    The peak decays by ``peak_decay_db_per_s``, so after a loud passage quieter speech counts again
    within seconds. The recursion ``peak[i] = max(level[i], peak[i-1] - d)`` is computed in one
    vectorised pass as ``max.accumulate(level + d*i) - d*i``.
    """

    def __init__(self, gate: GateConfig, features: FeatureConfig):
        self.gate = gate
        self._decay = gate.peak_decay_db_per_s / features.frame_rate
        self._peak = -np.inf

    def reset(self) -> None:
        """Forget the stream's peak."""
        self._peak = -np.inf

    def __call__(self, level_db: np.ndarray) -> np.ndarray:
        """Speech flags for frame levels.

        Args:
            level_db: np.ndarray [shape=(n,)], frame levels in dBFS.

        Returns:
            np.ndarray [shape=(n,), dtype=bool]
        """
        n = len(level_db)
        if n == 0:
            return np.zeros(0, dtype=bool)
        ramp = self._decay * np.arange(1, n + 1, dtype=np.float64)
        lifted = np.maximum.accumulate(np.asarray(level_db, dtype=np.float64) + ramp)
        peak = np.maximum(lifted, self._peak) - ramp
        self._peak = float(peak[-1])
        thresh = np.maximum(self.gate.abs_db, peak - self.gate.rel_db)
        return np.asarray(level_db) > thresh


def speech_fraction(flags: np.ndarray, starts: np.ndarray, n_frames: int) -> np.ndarray:
    """Fraction of speech frames in each window [start, start + n_frames)."""
    c = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    return (c[starts + n_frames] - c[starts]) / float(n_frames)
