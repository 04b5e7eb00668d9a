"""Telephone-band detection from frame features: audio that went through an 8 kHz channel upstream.

A call recorded at 8 kHz often reaches us resampled (a 16 kHz WAV, a 44.1 kHz MP3). Its rate then says
nothing, but its spectrum does: above 4 kHz it is empty. :class:`BandDetector` reads the smoothed log-mel
spectrum back out of the MFCCs (the orthonormal DCT's transpose), and over the first
:data:`DETECT_FRAMES` speech frames compares the level of the bands at 4.3-5.6 kHz with that of the
bands at 0.5-3 kHz. Wideband speech sits 0-25 dB lower up there (the low-pass of MP3 at 24 kb/s reaches
about -34 dB); speech that passed a telephone channel sits 38-100 dB lower, also 10 and 20 dB quieter
(measured on every cached copy of RAVDESS and EmoDB: ``python -m tools.band_eval``, model card). The decision falls at exactly that
frame, whatever block sizes the frames came in, so a stream and the same clip at once stay equal.
"""

from __future__ import annotations

import numpy as np

from streamer.config import BAND_DETECT_FRAMES, FeatureConfig
from streamer.features import dct_matrix, mel_edges

__all__ = ["BandDetector", "DETECT_FRAMES", "LOW_REF_DB", "THRESHOLD_DB", "band_gap"]

#: speech frames (20 ms each with the default features: 1 s of speech) the decision averages over
DETECT_FRAMES = BAND_DETECT_FRAMES
#: below this many dB of the 0.5-3 kHz bands, the 4.3-5.6 kHz bands count as empty
THRESHOLD_DB = -35.0
#: the lowest level (dB) the 0.5-3 kHz reference is taken at (see :func:`band_gap`)
LOW_REF_DB = -62.0
_HIGH_HZ = (4300.0, 5600.0)
_LOW_HZ = (500.0, 3000.0)


def _band_masks(cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    centres = mel_edges(cfg)[1:-1]
    hi = (centres >= _HIGH_HZ[0]) & (centres <= _HIGH_HZ[1])
    lo = (centres >= _LOW_HZ[0]) & (centres <= _LOW_HZ[1])
    return hi, lo


def band_gap(mfcc: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Per frame, the mean log-mel level (dB) of the 4.3-5.6 kHz bands minus that of the 0.5-3 kHz bands
    (taken as at least :data:`LOW_REF_DB`).

    ``mfcc`` [n, >= n_mfcc]: frame features whose first ``cfg.n_mfcc`` channels are the MFCCs.
    """
    hi, lo = _band_masks(cfg)
    if not hi.any() or not lo.any():
        raise ValueError(f"features at {cfg.sample_rate} Hz have no bands at {_HIGH_HZ[0]:g}-{_HIGH_HZ[1]:g} Hz")
    D = dct_matrix(cfg.n_mels, cfg.n_mfcc).astype(np.float64)
    x = np.asarray(mfcc, dtype=np.float64)[:, : cfg.n_mfcc]
    # the log-mel levels come back from the MFCCs through the orthonormal DCT's transpose
    high, low = x @ D[hi].mean(axis=0), x @ D[lo].mean(axis=0)
    # quiet speech: its highs reach the features' floor (-100 dB) however wide its band, so the lows
    # count as at least LOW_REF_DB and an empty top band is still told from a quiet one
    return high - np.maximum(low, LOW_REF_DB)


class BandDetector:
    """Decides once per stream, after :data:`DETECT_FRAMES` speech frames, whether it is telephone-band.

    ``push`` returns the index (in the block) of the frame at which the stream was found to be
    telephone-band, or None (undecided, wideband, or decided in an earlier block).
    """

    def __init__(self, cfg: FeatureConfig, frames: int = DETECT_FRAMES, threshold_db: float = THRESHOLD_DB):
        self.cfg = cfg
        self.frames = int(frames)
        self.threshold_db = float(threshold_db)
        self._n = 0
        self._sum = 0.0
        self.narrowband: bool | None = None  # None until decided

    @staticmethod
    def usable(cfg: FeatureConfig) -> bool:
        """Whether the features reach high enough (16 kHz and up) to tell."""
        hi, lo = _band_masks(cfg)
        return bool(hi.any() and lo.any())

    def push(self, mfcc: np.ndarray, speech: np.ndarray) -> int | None:
        """Add a block of frames [n, C] and speech flags [n]."""
        if self.narrowband is not None or len(mfcc) == 0:
            return None
        idx = np.flatnonzero(np.asarray(speech, dtype=bool))[: self.frames - self._n]
        if len(idx) == 0:
            return None
        self._sum += float(band_gap(np.asarray(mfcc)[idx], self.cfg).sum())
        self._n += len(idx)
        if self._n < self.frames:
            return None
        self.narrowband = self._sum / self._n < self.threshold_db
        return int(idx[-1]) if self.narrowband else None
