"""On-disk cache of frame features (MFCC + level) for every clip and augmented version.

Features come from :func:`streamer.features.frame_features` (the streamer's own code: train/serve
parity). One ``.npz`` per (clip list, feature config, version, seed) under ``cache/`` (git-ignored),
keyed by a hash of all of them (and of the feature and augmentation code), so changing any feature parameter recomputes.
Clips are keyed by their content, not their modification times: a copied or re-synced corpus reuses the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np

from streamer.config import FeatureConfig
from streamer.features import frame_features
from tools import augment
from streamer.sources import load_audio
from tools.datasets import Item

__all__ = ["CACHE_DIR", "ClipFeatures", "build", "clips_digest", "concat"]

CACHE_DIR = Path(os.environ.get("EMOSTREAM_CACHE", Path(__file__).resolve().parent.parent / "cache"))
_CACHE_VERSION = 3  # bump when augment.py changes what a version means


class ClipFeatures:
    """Frame features of clips x versions: ``mfcc(i, v)`` [n, C] and ``level(i, v)`` [n]."""

    def __init__(self, versions: list[str], parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]):
        self.versions = list(versions)
        self._parts = parts  # per version: offsets [n_clips, 2], mfcc [rows, C], level [rows]

    @property
    def n_clips(self) -> int:
        return self._parts[0][0].shape[0] if self._parts else 0

    def vindex(self, name: str) -> int:
        return self.versions.index(name)

    def mfcc(self, i: int, v: int) -> np.ndarray:
        off, mf, _ = self._parts[v]
        return mf[off[i, 0] : off[i, 1]]

    def level(self, i: int, v: int) -> np.ndarray:
        off, _, lv = self._parts[v]
        return lv[off[i, 0] : off[i, 1]]


def clips_digest(items: list[Item]) -> str:
    """Hash of the clip list: each path and the bytes of its file (43 MB of RAVDESS hash in well under 1 s)."""
    h = hashlib.sha1()
    for it in items:
        h.update(f"{it.path}|".encode())
        h.update(hashlib.sha1(Path(it.path).read_bytes()).digest())
    return h.hexdigest()


def _key(clips: str, cfg: FeatureConfig, version: str, seed: int) -> str:
    h = hashlib.sha1()
    h.update(json.dumps([asdict(cfg), version, seed, _CACHE_VERSION], sort_keys=True).encode())
    # the feature and augmentation code itself: a change there recomputes
    import streamer.features

    for mod in (streamer.features, augment):
        h.update(Path(mod.__file__).read_bytes())
    h.update(clips.encode())
    return h.hexdigest()[:16]


def version_rng(seed: int, clip: int, version: str) -> np.random.Generator:
    """The generator a clip's augmented version draws from: fixed by (seed, clip, version name)."""
    return np.random.default_rng([seed, clip, zlib.crc32(version.encode())])


def build(
    items: list[Item],
    cfg: FeatureConfig,
    versions: list[str],
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    log=print,
) -> ClipFeatures:
    """Frame features of every item in every version, from the cache or computed (one file a version).

    Items of several corpora (in runs, one corpus after the other) are cached per corpus, so a
    corpus's cache serves every combination it is part of.
    """
    runs: list[list[Item]] = []
    for it in items:
        if runs and runs[-1][0].corpus == it.corpus:
            runs[-1].append(it)
        else:
            runs.append([it])
    if len(runs) > 1:
        return concat([build(r, cfg, versions, seed, cache_dir, log) for r in runs])
    cache_dir = Path(cache_dir) if cache_dir else CACHE_DIR
    cache_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    audio: dict[int, np.ndarray] = {}
    clips = clips_digest(items)
    for name in versions:
        path = cache_dir / f"feat-{_key(clips, cfg, name, seed)}.npz"
        if path.exists():
            z = np.load(path)
            parts.append((z["offsets"], z["mfcc"], z["level"]))
            continue
        t0 = time.time()
        mf, lv = [], []
        offsets = np.zeros((len(items), 2), dtype=np.int64)
        row = 0
        for i, it in enumerate(items):
            if i not in audio:
                audio[i] = load_audio(it.path, cfg.sample_rate)[0]
            ya = augment.make_version(audio[i], name, cfg.sample_rate, version_rng(seed, i, name))
            m, l = frame_features(ya, cfg)
            mf.append(m)
            lv.append(l)
            offsets[i] = row, row + len(m)
            row += len(m)
        mfcc = np.concatenate(mf).astype(np.float32) if mf else np.zeros((0, cfg.n_channels), np.float32)
        level = np.concatenate(lv).astype(np.float32) if lv else np.zeros(0, np.float32)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, offsets=offsets, mfcc=mfcc, level=level)
        os.replace(tmp, path)
        if log:
            log(f"  features of version {name!r}: {len(items)} clips ({time.time() - t0:.0f} s)")
        parts.append((offsets, mfcc, level))
    return ClipFeatures(list(versions), parts)


def concat(parts: list[ClipFeatures]) -> ClipFeatures:
    """The clips of several caches (same versions) one after the other."""
    out = []
    for v in range(len(parts[0].versions)):
        offs, mfs, lvs, row = [], [], [], 0
        for cf in parts:
            off, mf, lv = cf._parts[v]
            offs.append(off + row)
            mfs.append(mf)
            lvs.append(lv)
            row += len(mf)
        out.append((np.concatenate(offs), np.concatenate(mfs), np.concatenate(lvs)))
    return ClipFeatures(parts[0].versions, out)
