"""A fixed-size ring buffer between an audio producer and the analysis loop."""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["RingBuffer"]


class RingBuffer:
    """Fixed-capacity multichannel sample buffer; memory never grows with the length of the audio.

    Args:
        capacity_frames: samples per channel the buffer holds.
        channels: channel count.
        overwrite: what a full buffer does on write. False (files): the writer waits for room, so
            nothing is lost. True (live capture): the oldest samples are dropped and counted in
            ``overruns`` / ``dropped_frames``, because a capture callback must never wait.
    """

    def __init__(self, capacity_frames: int, channels: int, overwrite: bool = False):
        if capacity_frames < 1 or channels < 1:
            raise ValueError("capacity_frames and channels must be positive")
        self.capacity = int(capacity_frames)
        self.channels = int(channels)
        self.overwrite = overwrite
        self._buf = np.zeros((self.capacity, self.channels), dtype=np.float32)
        self._read = 0  # absolute frame counters; position in _buf is counter % capacity
        self._write = 0
        self._closed = False
        self._cond = threading.Condition()
        self.overruns = 0
        self.dropped_frames = 0

    def __len__(self) -> int:
        with self._cond:
            return self._write - self._read

    @property
    def closed(self) -> bool:
        """True once the producer has said there is no more audio."""
        return self._closed

    @property
    def frames_written(self) -> int:
        """Frames written since creation (dropped ones included)."""
        return self._write

    def _put(self, block: np.ndarray) -> None:
        n = len(block)
        pos = self._write % self.capacity
        first = min(n, self.capacity - pos)
        self._buf[pos : pos + first] = block[:first]
        if first < n:
            self._buf[: n - first] = block[first:]
        self._write += n

    def write(self, block: np.ndarray, timeout: float | None = None) -> bool:
        """Append samples [n, channels]; returns False if the buffer was closed meanwhile."""
        block = np.asarray(block, dtype=np.float32)
        if block.ndim == 1:
            block = block[:, None]
        if block.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {block.shape[1]}")
        with self._cond:
            if self._closed:
                return False
            if self.overwrite:
                if len(block) > self.capacity:
                    self.dropped_frames += len(block) - self.capacity
                    self.overruns += 1
                    block = block[-self.capacity :]
                excess = self._write - self._read + len(block) - self.capacity
                if excess > 0:
                    self._read += excess
                    self.dropped_frames += excess
                    self.overruns += 1
                self._put(block)
                self._cond.notify_all()
                return True
            a = 0
            while a < len(block):
                while self._write - self._read >= self.capacity and not self._closed:
                    if not self._cond.wait(timeout):
                        return False
                if self._closed:
                    return False
                room = self.capacity - (self._write - self._read)
                chunk = block[a : a + room]
                self._put(chunk)
                a += len(chunk)
                self._cond.notify_all()
            return True

    def read(self, max_frames: int, timeout: float | None = None, min_frames: int = 1) -> np.ndarray | None:
        """Take up to ``max_frames`` samples, waiting for at least ``min_frames``.

        Returns an empty array on timeout and None once the buffer is closed and drained.
        """
        with self._cond:
            want = max(1, min(min_frames, self.capacity))
            ok = self._cond.wait_for(lambda: self._write - self._read >= want or self._closed, timeout)
            avail = self._write - self._read
            if avail == 0:
                return None if self._closed else np.zeros((0, self.channels), np.float32)
            if not ok and avail < want:
                return np.zeros((0, self.channels), np.float32)
            n = min(avail, max_frames)
            pos = self._read % self.capacity
            first = min(n, self.capacity - pos)
            out = np.empty((n, self.channels), dtype=np.float32)
            out[:first] = self._buf[pos : pos + first]
            if first < n:
                out[first:] = self._buf[: n - first]
            self._read += n
            self._cond.notify_all()
            return out

    def close(self) -> None:
        """No more writes; readers drain what is left, then get None. Safe to call twice."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
