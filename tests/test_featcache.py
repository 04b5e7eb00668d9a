"""The training feature cache: one file per augmented version, reused across version lists."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streamer.config import FeatureConfig  # noqa: E402
from streamer.features import frame_features  # noqa: E402
from tools import augment, featcache  # noqa: E402
from streamer.sources import load_audio  # noqa: E402
from tools.datasets import Item  # noqa: E402

FIX = ROOT / "tests" / "fixtures"


def _items() -> list[Item]:
    return [Item(path=str(p), corpus="ravdess", label="neutral", speaker=p.stem[-2:], source_label="01")
            for p in sorted(FIX.glob("*.flac"))]


def test_cache_is_per_version_and_matches_the_streamer_features(tmp_path):
    items, cfg = _items(), FeatureConfig()
    a = featcache.build(items, cfg, ["clean", "noisy#2"], cache_dir=tmp_path, log=None)
    assert len(list(tmp_path.glob("feat-*.npz"))) == 2
    # clean rows are the streamer's own frame features of the clip
    m, lv = frame_features(load_audio(items[1].path, cfg.sample_rate)[0], cfg)
    np.testing.assert_array_equal(a.mfcc(1, a.vindex("clean")), m.astype(np.float32))
    np.testing.assert_array_equal(a.level(1, 0), lv.astype(np.float32))
    # the noisy draw is the one make_version gives with the version's own generator
    y = augment.make_version(load_audio(items[2].path, cfg.sample_rate)[0], "noisy#2", cfg.sample_rate,
                             featcache.version_rng(0, 2, "noisy#2"))
    np.testing.assert_array_equal(a.mfcc(2, 1), frame_features(y, cfg)[0].astype(np.float32))
    # a longer list reuses the cached versions (same arrays, in its own order) and adds one file
    b = featcache.build(items, cfg, ["noisy#2", "speed", "clean"], cache_dir=tmp_path, log=None)
    assert len(list(tmp_path.glob("feat-*.npz"))) == 3
    for i in range(len(items)):
        np.testing.assert_array_equal(b.mfcc(i, 0), a.mfcc(i, 1))
        np.testing.assert_array_equal(b.mfcc(i, 2), a.mfcc(i, 0))
        assert b.mfcc(i, 1).shape[1] == cfg.n_mfcc
    # another feature configuration is another cache entry
    featcache.build(items, FeatureConfig(n_mfcc=20), ["clean"], cache_dir=tmp_path, log=None)
    assert len(list(tmp_path.glob("feat-*.npz"))) == 4


def test_cache_follows_clip_content_not_modification_time(tmp_path):
    import os
    import shutil

    clips = tmp_path / "clips"
    shutil.copytree(FIX, clips, ignore=shutil.ignore_patterns("*.txt", "*.md", "*.json"))
    items = [Item(path=str(p), corpus="ravdess", label="neutral", speaker=p.stem[-2:], source_label="01")
             for p in sorted(clips.glob("*.flac"))]
    cfg, cache = FeatureConfig(), tmp_path / "cache"
    featcache.build(items, cfg, ["clean"], cache_dir=cache, log=None)
    # a re-synced corpus (new mtimes, same bytes) reuses the cache
    for it in items:
        os.utime(it.path, (1e9, 1e9))
    featcache.build(items, cfg, ["clean"], cache_dir=cache, log=None)
    assert len(list(cache.glob("feat-*.npz"))) == 1
    # changed bytes are another entry
    Path(items[0].path).write_bytes(Path(items[1].path).read_bytes())
    featcache.build(items, cfg, ["clean"], cache_dir=cache, log=None)
    assert len(list(cache.glob("feat-*.npz"))) == 2
