"""The interfaces around the hub: :class:`HubBackend` (where streams are stored and shared between
nodes) and :class:`HubObserver` (who is told of each message and dropped subscriber: the metrics).

Implementations: :class:`streamer.server.memory.MemoryBackend` (one process);
a Redis backend (``streamer/server/redis_backend.py``) for many nodes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, AsyncIterator, Protocol, runtime_checkable

from streamer.server.message import Message

if TYPE_CHECKING:
    from streamer.server.hub import Stream, Subscriber

__all__ = ["HubBackend", "HubObserver"]


@runtime_checkable
class HubBackend(Protocol):
    """Where streams live beyond one process: ID leases, history, other nodes' streams.

    The hub calls the synchronous methods on the event loop for every message, so they must never
    block (a networked backend buffers and writes in a task of its own). The ``async`` ones may
    wait on the network. Stream IDs are already validated by the server.
    """

    name: str  # "memory", "redis": shown on /health
    node_id: str | None  # this node's name in a cluster (each ``GET /streams`` row's ``node``); None alone

    async def claim(self, stream_id: str) -> bool:
        """Lease ``stream_id`` to this node for a new live stream; False when a live stream anywhere
        holds it. A networked backend renews the lease until :meth:`end` or :meth:`release`, and
        lets it expire when this node dies."""
        ...

    async def release(self, stream_id: str) -> None:
        """Give back a lease that never became a stream (the ingest client failed before ``start``)."""
        ...

    def start(self, stream_id: str, hello: Message, kind: str) -> None:
        """A stream this node produces begins (replacing any ended one of that ID): forget its old
        history; ``hello`` (no seq) is what every subscriber gets first; ``kind`` is ``source``
        or ``ingest``."""
        ...

    def append(self, stream_id: str, message: Message) -> None:
        """Store a numbered message (``message.seq`` rises by one per call; ``message.text`` is the
        frame) of a stream this node produces. Keeps at least the last ``history`` messages."""
        ...

    def read_since(self, stream_id: str, since: int) -> tuple[list[Message], int | None]:
        """The stored messages with seq > ``since`` of a stream this node produces, oldest first,
        and the first seq after ``since`` that is no longer stored (None when nothing was lost)."""
        ...

    def end(self, stream_id: str) -> None:
        """The stream's ``end`` has been appended: the lease goes; history stays for late
        subscribers (a networked backend expires it some time later)."""
        ...

    def forget(self, stream_id: str) -> None:
        """Drop an ended stream's history (the hub no longer lists it)."""
        ...

    async def list_streams(self) -> list[dict[str, Any]]:
        """Streams of OTHER nodes, each as ``GET /streams`` lists one (at least ``id``, ``live``);
        ``[]`` for a backend of one process."""
        ...

    async def lookup(self, stream_id: str) -> Message | None:
        """The hello of another node's stream, or None when no node has it (always None in one
        process)."""
        ...

    def follow(self, stream_id: str, after: int) -> AsyncIterator[Message]:
        """Another node's stream: every message with seq > ``after``, oldest first, then the new
        ones as they are appended, ending after its ``end``. When the producing node dies, the
        iterator yields an ``error`` message (seq None) and an ``end`` once the lease expired."""
        ...

    async def health(self) -> dict[str, Any]:
        """``{"ok": bool, ...}``: False makes ``GET /health`` answer 503 (e.g. Redis unreachable);
        the other keys are shown there under ``backend``."""
        ...

    async def close(self) -> None:
        """Flush and disconnect; safe to call twice."""
        ...


class HubObserver(Protocol):
    """Told about what happens in the hub (the server's metrics implement it)."""

    def published(self, stream: "Stream", message: Message) -> None:
        """A numbered message was published."""
        ...

    def dropped(self, subscriber: "Subscriber") -> None:
        """A subscriber was dropped for being too slow."""
        ...
