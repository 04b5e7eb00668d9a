"""On-disk cache of frame features (MFCC + level) for every clip and augmented version.

Features come from :func:`streamer.features.frame_features` (the streamer's own code: train/serve
parity). One ``.npz`` per (clip list, feature config, versions, seed) under ``cache/`` (git-ignored),
keyed by a hash of all of them, so changing any feature parameter recomputes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from streamer.config import FeatureConfig
from streamer.features import frame_features
from tools import augment
from tools.datasets import Item, load_audio

__all__ = ["CACHE_DIR", "ClipFeatures", "build"]

CACHE_DIR = Path(os.environ.get("EMOSTREAM_CACHE", Path(__file__).resolve().parent.parent / "cache"))
_CACHE_VERSION = 2  # bump when augment.py changes what a version means


class ClipFeatures:
    """Frame features of clips x versions: ``mfcc(i, v)`` [n, C] and ``level(i, v)`` [n]."""

    def __init__(self, versions: list[str], offsets: np.ndarray, mfcc: np.ndarray, level: np.ndarray):
        self.versions = list(versions)
        self.offsets = offsets  # [n_clips, n_versions, 2] start, end rows
        self._mfcc = mfcc
        self._level = level

    @property
    def n_clips(self) -> int:
        return self.offsets.shape[0]

    def vindex(self, name: str) -> int:
        return self.versions.index(name)

    def mfcc(self, i: int, v: int) -> np.ndarray:
        a, b = self.offsets[i, v]
        return self._mfcc[a:b]

    def level(self, i: int, v: int) -> np.ndarray:
        a, b = self.offsets[i, v]
        return self._level[a:b]


def _key(items: list[Item], cfg: FeatureConfig, versions: list[str], seed: int) -> str:
    h = hashlib.sha1()
    h.update(json.dumps([asdict(cfg), list(versions), seed, _CACHE_VERSION], sort_keys=True).encode())
    # the feature and augmentation code itself: a change there recomputes
    import streamer.features

    for mod in (streamer.features, augment):
        h.update(Path(mod.__file__).read_bytes())
    for it in items:
        st = os.stat(it.path)
        h.update(f"{it.path}|{st.st_size}|{int(st.st_mtime)}\n".encode())
    return h.hexdigest()[:16]


def build(
    items: list[Item],
    cfg: FeatureConfig,
    versions: list[str],
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    log=print,
) -> ClipFeatures:
    """Frame features of every item in every version, from the cache or computed (and cached)."""
    cache_dir = Path(cache_dir) if cache_dir else CACHE_DIR
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"feat-{_key(items, cfg, versions, seed)}.npz"
    if path.exists():
        z = np.load(path)
        return ClipFeatures(list(z["versions"]), z["offsets"], z["mfcc"], z["level"])
    t0 = time.time()
    mf, lv = [], []
    offsets = np.zeros((len(items), len(versions), 2), dtype=np.int64)
    row = 0
    for i, it in enumerate(items):
        y = load_audio(it.path, cfg.sample_rate)
        for v, name in enumerate(versions):
            rng = np.random.default_rng([seed, i, v])
            ya = augment.make_version(y, name, cfg.sample_rate, rng)
            m, l = frame_features(ya, cfg)
            mf.append(m)
            lv.append(l)
            offsets[i, v] = row, row + len(m)
            row += len(m)
        if log and (i + 1) % 200 == 0:
            log(f"  features {i + 1}/{len(items)} ({time.time() - t0:.0f} s)")
    mfcc = np.concatenate(mf).astype(np.float32) if mf else np.zeros((0, cfg.n_mfcc), np.float32)
    level = np.concatenate(lv).astype(np.float32) if lv else np.zeros(0, np.float32)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, versions=np.array(versions), offsets=offsets, mfcc=mfcc, level=level)
    os.replace(tmp, path)
    return ClipFeatures(list(versions), offsets, mfcc, level)
