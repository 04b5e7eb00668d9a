"""The hub backend of one process: ID claims and bounded history in memory, no other nodes."""

from __future__ import annotations

import collections
from typing import Any, AsyncIterator

from streamer.server.message import Message

__all__ = ["MemoryBackend"]


# What a kept message costs besides its text: the Message object, the str header, the deque slot.
MESSAGE_OVERHEAD = 160


class MemoryBackend:
    """:class:`~streamer.server.hub.HubBackend` for a single server process.

    History is bounded three ways: ``history`` messages and ``history_bytes`` per stream, and
    ``total_bytes`` for all streams together. Past the total, the histories of ended streams go
    first (oldest ended first), then the oldest messages of the stream being appended to; a
    subscriber whose ``since`` is no longer held is told so (the ``gap`` of :meth:`read_since`).

    Args:
        history: messages kept per stream for ``since`` replay.
        history_bytes: bytes of messages kept per stream.
        total_bytes: bytes of messages kept for all streams together.
    """

    name = "memory"
    node_id = None  # one process: its rows carry no ``node``

    def __init__(self, history: int = 100_000, history_bytes: int = 16 << 20, total_bytes: int = 96 << 20):
        self.history = max(1, history)
        self.history_bytes = max(1, history_bytes)
        self.total_bytes = max(1, total_bytes)
        self.bytes = 0  # all streams together
        self._logs: dict[str, collections.deque[Message]] = {}
        self._sizes: dict[str, int] = {}
        self._ended: dict[str, None] = {}  # ended streams, oldest first
        self._claimed: set[str] = set()

    async def claim(self, stream_id: str) -> bool:
        """Lease an ID; False while a live stream of this process holds it."""
        if stream_id in self._claimed:
            return False
        self._claimed.add(stream_id)
        return True

    async def release(self, stream_id: str) -> None:
        """Give back a lease that never became a stream."""
        self._claimed.discard(stream_id)

    def start(self, stream_id: str, hello: Message, kind: str) -> None:
        """A stream begins: its old history (an ended stream of the same ID) goes."""
        self.forget(stream_id)
        self._logs[stream_id] = collections.deque()
        self._sizes[stream_id] = 0

    def append(self, stream_id: str, message: Message) -> None:
        """Keep a numbered message (the oldest go past ``history``, ``history_bytes`` or ``total_bytes``)."""
        log = self._logs.get(stream_id)
        if log is None:
            log = self._logs[stream_id] = collections.deque()
            self._sizes[stream_id] = 0
        size = len(message.text) + MESSAGE_OVERHEAD
        log.append(message)
        self._sizes[stream_id] += size
        self.bytes += size
        while len(log) > 1 and (len(log) > self.history or self._sizes[stream_id] > self.history_bytes):
            self._pop_oldest(stream_id)
        while self.bytes > self.total_bytes and self._ended:
            self.forget(next(iter(self._ended)))
        while self.bytes > self.total_bytes and len(log) > 1:
            self._pop_oldest(stream_id)

    def _pop_oldest(self, stream_id: str) -> None:
        size = len(self._logs[stream_id].popleft().text) + MESSAGE_OVERHEAD
        self._sizes[stream_id] -= size
        self.bytes -= size

    def read_since(self, stream_id: str, since: int) -> tuple[list[Message], int | None]:
        """Kept messages with seq > ``since`` and the first lost seq after ``since`` (or None)."""
        log = self._logs.get(stream_id)
        if not log:
            return [], None
        first = log[0].seq or 0
        gap = since + 1 if since + 1 < first else None
        last = log[-1].seq or 0
        if since >= last:
            return [], gap
        skip = max(0, since + 1 - first)
        # seqs are consecutive, so the index of seq n is n - first
        return [log[i] for i in range(skip, len(log))], gap

    def end(self, stream_id: str) -> None:
        """The stream ended: its ID is free again (its history stays, first to go when memory is short)."""
        self._claimed.discard(stream_id)
        self._ended.pop(stream_id, None)
        self._ended[stream_id] = None

    def forget(self, stream_id: str) -> None:
        """Drop an ended stream's history."""
        self._logs.pop(stream_id, None)
        self.bytes -= self._sizes.pop(stream_id, 0)
        self._ended.pop(stream_id, None)

    async def list_streams(self) -> list[dict[str, Any]]:
        """No other nodes."""
        return []

    async def lookup(self, stream_id: str) -> Message | None:
        """No other nodes."""
        return None

    async def follow(self, stream_id: str, after: int) -> AsyncIterator[Message]:
        """No other nodes: nothing to follow."""
        return
        yield  # an async generator that yields nothing

    async def health(self) -> dict[str, Any]:
        """Always able to serve."""
        return {"ok": True, "backend": self.name}

    async def close(self) -> None:
        """Nothing to flush."""
