"""Memory the server may hold on behalf of its clients, in bytes, and giving freed memory back.

* :class:`ByteBudget`: ingest audio received but not analysed yet, summed over every stream. An
  ingest reader that would push it past its limit waits (it stops reading its socket, so TCP
  pushes back on the sender): many fast senders together hold at most the budget, however fast
  they send.
* :func:`trim_heap`: after a burst (many streams, large uploads) the C allocator keeps freed
  memory mapped; ``malloc_trim`` hands it back, so the process returns near its idle size.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import threading
import time

__all__ = ["ByteBudget", "trim_heap"]


class ByteBudget:
    """A count of bytes held against a limit; ``wait_below()`` until there is room.

    Args:
        limit: bytes that may be held at once (a single holder may go past it once: a frame is
            never split, and waiting would then never end).
    """

    def __init__(self, limit: int):
        self.limit = max(1, int(limit))
        self.used = 0
        self._changed: asyncio.Event | None = None  # made on the loop that waits

    def take(self, n: int) -> None:
        """Hold ``n`` more bytes."""
        self.used += n

    def give(self, n: int) -> None:
        """Let go of ``n`` bytes; wakes the waiters."""
        self.used = max(0, self.used - n)
        if self._changed is not None:
            self._changed.set()

    def over(self) -> bool:
        """Whether the limit is reached."""
        return self.used >= self.limit

    async def changed(self) -> None:
        """Wait until some bytes are let go (or a second passes: a waiter rechecks its own state)."""
        if self._changed is None:
            self._changed = asyncio.Event()
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), 1.0)
        except asyncio.TimeoutError:
            pass


_trim_lock = threading.Lock()
_last_trim = 0.0
_libc = None


def trim_heap(min_interval: float = 2.0) -> bool:
    """Return freed heap memory to the system (glibc ``malloc_trim``), at most every ``min_interval`` s.

    Returns:
        True when a trim ran (False: too soon, or not glibc).
    """
    global _last_trim, _libc
    with _trim_lock:
        now = time.monotonic()
        if now - _last_trim < min_interval:
            return False
        _last_trim = now
        if _libc is None:
            try:
                _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                _libc.malloc_trim.argtypes = [ctypes.c_size_t]
            except (OSError, AttributeError):
                _libc = False
        if not _libc:
            return False
        _libc.malloc_trim(0)
        return True
