"""The one pipeline: streamed == whole, bounded memory, ring buffer accounting, stopping (timeline rules: test_timeline.py)."""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest

from streamer.pipeline import Pipeline, run
from streamer.ringbuffer import RingBuffer
from streamer.sources import Source, open_source
from tests.conftest import EXAMPLE, read_mono


def _events(meta, clf, y, sr, blocks):
    pipe = Pipeline(meta, clf, in_rate=sr, in_channels=1)
    out, i = [], 0
    for n in blocks:
        out += pipe.feed(y[i : i + n, None])
        i += n
    out += pipe.feed(y[i:, None])
    out += pipe.finish()
    return out


def test_streamed_in_small_blocks_equals_whole_file(model):
    meta, clf = model
    y, sr = read_mono(EXAMPLE)
    y = y[: sr * 25]
    whole = _events(meta, clf, y, sr, [])
    rng = np.random.default_rng(5)
    small = _events(meta, clf, y, sr, list(rng.integers(1, 3000, 400)))
    assert [e["type"] for e in small] == [e["type"] for e in whole]
    for a, b in zip(small, whole):
        assert a["start"] == b["start"] and a.get("label") == b.get("label")
        if a.get("probs"):
            for k in a["probs"]:
                assert abs(a["probs"][k] - b["probs"][k]) < 2e-3


def test_resampled_stream_matches_in_blocks(model):
    meta, clf = model
    import soxr

    y, sr = read_mono(EXAMPLE)
    y8 = soxr.resample(y[: sr * 20], sr, 8000).astype(np.float32)
    whole = _events(meta, clf, y8, 8000, [])
    small = _events(meta, clf, y8, 8000, [160] * 700)
    assert [e.get("label") for e in small] == [e.get("label") for e in whole]


class _Synthetic(Source):
    """Endless-looking speech-like input: the example tiled, generated block by block."""

    def __init__(self, seconds: float):
        super().__init__()
        self._y, self.sample_rate = read_mono(EXAMPLE)
        self.channels, self.uri, self.duration = 1, "synthetic", seconds
        self._left = int(seconds * self.sample_rate)
        self._pos = 0

    def read(self, max_frames: int) -> np.ndarray:
        n = min(max_frames, self._left)
        idx = (self._pos + np.arange(n)) % len(self._y)
        self._pos += n
        self._left -= n
        return self._y[idx][:, None]


def _peak_traced(meta, clf, seconds: float) -> tuple[int, int]:
    count = [0]
    pipe = Pipeline(meta, clf, in_rate=16000, in_channels=1)
    tracemalloc.start()
    tracemalloc.reset_peak()
    run(_Synthetic(seconds), pipe, lambda evs: count.__setitem__(0, count[0] + len(evs)), block_s=5.0, ring_s=20.0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, count[0]


@pytest.mark.slow
def test_memory_stays_flat_with_length(model):
    """Peak Python/numpy allocation for 40 min of audio is no more than for 5 min (measured, not timed)."""
    meta, clf = model
    short_peak, n_short = _peak_traced(meta, clf, 300)
    long_peak, n_long = _peak_traced(meta, clf, 2400)
    assert n_long > 7 * n_short  # it really did process eight times more windows
    assert long_peak < short_peak * 1.15 + 2_000_000, (short_peak, long_peak)


def test_ring_buffer_waits_for_files_and_counts_live_overruns():
    rb = RingBuffer(100, 1, overwrite=True)
    rb.write(np.arange(80, dtype=np.float32))
    rb.write(np.arange(50, dtype=np.float32))
    assert rb.overruns == 1 and rb.dropped_frames == 30 and len(rb) == 100
    got = rb.read(1000)
    assert got[0, 0] == 30 and got[-1, 0] == 49
    rb = RingBuffer(10, 2, overwrite=False)
    done = threading.Event()

    def writer():
        rb.write(np.ones((35, 2), np.float32))
        rb.close()
        done.set()

    threading.Thread(target=writer, daemon=True).start()
    total = 0
    while (b := rb.read(4, timeout=2)) is not None:
        total += len(b)
    assert total == 35 and done.wait(2) and rb.overruns == 0


def test_live_source_overrun_is_reported(model):
    meta, clf = model

    class Burst(Source):
        live = True

        def __init__(self):
            super().__init__()
            self.sample_rate, self.channels, self.uri = 16000, 1, "burst"
            self._n = 0

        def read(self, max_frames):
            self._n += 1
            if self._n > 40:
                return np.zeros((0, 1), np.float32)
            return np.random.default_rng(self._n).normal(0, 0.1, (16000 * 3, 1)).astype(np.float32)

    pipe = Pipeline(meta, clf, in_rate=16000, in_channels=1)
    stats = run(Burst(), pipe, lambda evs: None, ring_s=1.0)
    assert stats.overruns > 0 and stats.dropped_frames > 0


def test_stop_event_ends_a_realtime_run(model):
    meta, clf = model
    stop = threading.Event()
    src = open_source(EXAMPLE)
    pipe = Pipeline(meta, clf, in_rate=src.sample_rate, in_channels=1)
    threading.Timer(1.0, stop.set).start()
    stats = run(src, pipe, lambda evs: None, realtime=True, stop=stop)
    # stopped after about a second, not after the file's 62 s (margins for a loaded machine)
    assert 0 < stats.audio_s < 30 and stats.wall_s < 30

