"""Memory the server may hold on behalf of its clients, in bytes, and giving freed memory back.

* :class:`ByteBudget`: ingest audio received but not analysed yet, summed over every stream. An
  ingest reader that would push it past its limit waits (it stops reading its socket, so TCP
  pushes back on the sender): many fast senders together hold at most the budget, however fast
  they send.
* :class:`MemoryGuard`: the process's resident size against the server's memory budget; new
  ingest streams and uploads are refused while it is over.
* :func:`trim_heap`: after a burst (many streams, large uploads) the C allocator keeps freed
  memory mapped; ``malloc_trim`` hands it back, so the process returns near its idle size.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import threading
import time

__all__ = ["ByteBudget", "trim_heap", "rss_bytes", "MemoryGuard"]


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


def rss_bytes() -> int:
    """This process's resident set size in bytes (0 where /proc cannot tell)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class MemoryGuard:
    """The server's memory budget: while the process's resident size is over it, new ingest
    streams and uploads are refused (try again later), and the work already admitted goes on.

    The other bounds (history, ingest backlog, read-ahead, upload pool) keep the server within
    the budget for the loads measured in README; this is the backstop for any other mix.

    Args:
        limit: bytes; None: no budget.
        every: seconds a measurement is reused (reading /proc costs a system call).
    """

    def __init__(self, limit: int | None, every: float = 0.5):
        self.limit = limit
        self.every = every
        self._at = -1e9
        self._rss = 0

    def rss(self) -> int:
        """The resident size, measured at most every ``every`` seconds."""
        now = time.monotonic()
        if now - self._at >= self.every:
            self._at, self._rss = now, rss_bytes()
        return self._rss

    def over(self) -> bool:
        """Whether the budget is spent (never, without one)."""
        if self.limit is None:
            return False
        if self.rss() <= self.limit:
            return False
        trim_heap()  # freed memory the allocator still holds may be all it takes
        self._at = -1e9
        return self.rss() > self.limit

    def refusal(self) -> str:
        """Why new work is refused, for the client."""
        return (f"server is at its memory budget ({self.rss() >> 20} of {(self.limit or 0) >> 20} MB); "
                "retry later")
