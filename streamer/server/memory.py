"""The hub backend of one process: ID claims and bounded history in memory, no other nodes."""

from __future__ import annotations

import collections
from typing import Any, AsyncIterator

from streamer.server.message import Message

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """:class:`~streamer.server.hub.HubBackend` for a single server process.

    Args:
        history: messages kept per stream for ``since`` replay.
    """

    name = "memory"

    def __init__(self, history: int = 100_000):
        self.history = max(1, history)
        self._logs: dict[str, collections.deque[Message]] = {}
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
        self._logs[stream_id] = collections.deque(maxlen=self.history)

    def append(self, stream_id: str, message: Message) -> None:
        """Keep a numbered message (the oldest goes past ``history``)."""
        log = self._logs.get(stream_id)
        if log is None:
            log = self._logs[stream_id] = collections.deque(maxlen=self.history)
        log.append(message)

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
        """The stream ended: its ID is free again (its history stays)."""
        self._claimed.discard(stream_id)

    def forget(self, stream_id: str) -> None:
        """Drop an ended stream's history."""
        self._logs.pop(stream_id, None)

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
