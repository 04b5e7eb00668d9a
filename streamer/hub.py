"""Streams of timeline messages and their subscribers.

A :class:`Stream` numbers its messages (``seq`` +1 per message, from 1), keeps a bounded history
for ``since`` replay, optionally appends every message to a JSONL file, and fans each message out
to its subscribers. Every subscriber has a bounded queue of encoded frames: publishing never waits
on a subscriber, and one whose queue overflows is dropped (it is sent an ``error`` and closed by the
connection that owns it). All methods run on the event loop's thread; producers on other threads
hand events over with ``loop.call_soon_threadsafe(stream.publish_many, events)``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from pathlib import Path
from typing import IO, Any, Callable, Iterable

from streamer import protocol
from streamer.errors import UsageError

__all__ = ["Subscriber", "Stream", "Hub"]

log = logging.getLogger("emostream.hub")


class Subscriber:
    """One subscriber's bounded queue of encoded frames.

    The owner (a connection task) loops: ``await sub.wait()``, ``for text in sub.take(): send``;
    it stops when :attr:`closed` is set and the queue is empty.
    """

    def __init__(self, stream: "Stream", max_queue: int, on_drop: Callable[["Subscriber"], None] | None = None):
        self.stream = stream
        self.max_queue = max_queue
        self.queue: collections.deque[str] = collections.deque()
        self.event = asyncio.Event()
        self.closed = False
        self.dropped: str | None = None  # why it was dropped, when it was
        self.on_drop = on_drop
        self.sent = 0
        # Fast path: when nothing waits and the owner is not sending, ``direct(text)`` may write the
        # frame at once without blocking (True) or decline (False: the frame is queued instead).
        self.direct: Callable[[str], bool] | None = None
        self.busy = False  # the owner is sending queued frames

    def push(self, text: str) -> None:
        """Send one frame now if the fast path allows, else queue it; drop the subscriber when full."""
        if self.closed:
            return
        if self.direct is not None and not self.queue and not self.busy and self.direct(text):
            self.sent += 1
            return
        if len(self.queue) >= self.max_queue:
            self.drop(f"subscriber too slow: more than {self.max_queue} messages waiting; "
                      "reconnect with since=SEQ to resume")
            return
        self.queue.append(text)
        self.event.set()

    def drop(self, reason: str) -> None:
        """Stop queueing: discard what waits and leave only an ``error`` frame."""
        if self.closed:
            return
        self.dropped = reason
        self.queue.clear()
        self.queue.append(protocol.encode(protocol.error(reason)))
        self.close()
        if self.on_drop is not None:
            try:
                self.on_drop(self)
            except Exception:  # a callback must not break the producer
                log.exception("on_drop callback failed")

    def close(self) -> None:
        """No more frames will come; the owner drains the queue and stops."""
        self.closed = True
        self.event.set()
        self.stream.unsubscribe(self)

    async def wait(self) -> None:
        """Wait until there is something to take or the subscriber is closed."""
        if not self.queue and not self.closed:
            self.event.clear()
            await self.event.wait()

    def take(self) -> list[str]:
        """Everything queued, oldest first."""
        items = list(self.queue)
        self.queue.clear()
        self.event.clear()
        return items


class Stream:
    """One timeline: numbered messages, bounded history, subscribers, optional JSONL record.

    Args:
        stream_id: the stream's name (``main`` for a server's own source, else the ingest ID).
        history: messages kept in memory for ``since`` replay.
        max_queue: frames a subscriber may have waiting before it is dropped.
        record: a file object to append each message to as one JSON line (flushed per message).
    """

    def __init__(self, stream_id: str, *, history: int = 100_000, max_queue: int = 1024,
                 record: IO[str] | None = None, kind: str = "source"):
        self.id = stream_id
        self.kind = kind
        self.started = time.time()
        self.ended_at: float | None = None
        self.hello: dict[str, Any] | None = None
        self.hello_text: str | None = None
        self.seq = 0
        self.history: collections.deque[tuple[int, str]] = collections.deque(maxlen=max(1, history))
        self.max_queue = max_queue
        self.record = record
        self.subscribers: set[Subscriber] = set()
        self.current: dict[int, dict[str, Any]] = {}  # channel -> latest window summary
        self.capture: dict[str, Any] | None = None     # a live source's capture health, if known
        self.ended = False

    # -- producing -------------------------------------------------------------------------

    def set_hello(self, hello: dict[str, Any]) -> None:
        """The stream's hello (sent first to every subscriber, no seq)."""
        msg = {**hello, "type": "hello"}
        msg = {"type": "hello", **{k: v for k, v in msg.items() if k != "type"}}
        msg.setdefault("stream", self.id)
        msg.setdefault("started", round(self.started, 3))  # tells a resuming client it is the same stream
        self.hello = msg
        self.hello_text = protocol.encode(msg)
        self._record(self.hello_text)

    def publish(self, event: dict[str, Any]) -> int:
        """Number one event, keep it, record it and queue it to every subscriber; returns its seq."""
        if self.ended:
            return self.seq
        self.seq += 1
        msg = protocol.to_wire(event, self.seq)
        text = protocol.encode(msg)
        self.history.append((self.seq, text))
        self._record(text)
        if msg.get("type") == "window":
            self.current[int(msg.get("channel", 0) or 0)] = {
                "channel": msg.get("channel", 0), "channel_name": msg.get("channel_name"),
                "label": msg.get("label"), "confidence": msg.get("confidence"),
                "speech": msg.get("speech"), "start": msg.get("start"), "end": msg.get("end")}
        for sub in list(self.subscribers):
            sub.push(text)
        return self.seq

    def publish_many(self, events: Iterable[dict[str, Any]]) -> None:
        """Publish events in order."""
        for ev in events:
            self.publish(ev)

    def error(self, message: str) -> None:
        """Send an ``error`` (no seq, not kept) to the current subscribers."""
        text = protocol.encode(protocol.error(message))
        for sub in list(self.subscribers):
            sub.push(text)

    def end(self) -> None:
        """Publish ``end``; the stream keeps its history, and its subscribers are closed after it."""
        if self.ended:
            return
        self.publish({"type": "end"})
        self.ended = True
        self.ended_at = time.time()
        for sub in list(self.subscribers):
            sub.close()

    def _record(self, text: str) -> None:
        if self.record is None:
            return
        try:
            self.record.write(text + "\n")
            self.record.flush()
        except (OSError, ValueError) as exc:
            log.error("recording stopped: %s", exc)
            self.record = None

    # -- subscribing -----------------------------------------------------------------------

    def subscribe(self, since: int = 0, on_drop: Callable[[Subscriber], None] | None = None
                  ) -> tuple[Subscriber, list[str], int | None]:
        """A new subscriber plus the frames to replay first.

        Returns:
            (subscriber, replay, gap): ``replay`` holds the hello and every kept message with
            seq > ``since``; ``gap`` is the first seq that history no longer holds when messages
            after ``since`` have been forgotten (else None). Messages published after this call
            go to the subscriber's queue, so replay + queue has nothing lost or repeated.
        """
        sub = Subscriber(self, self.max_queue, on_drop)
        replay: list[str] = [self.hello_text] if self.hello_text else []
        gap = None
        if self.history:
            first = self.history[0][0]
            if since + 1 < first:
                gap = since + 1
            if since < self.seq:
                skip = max(0, since + 1 - first)
                replay.extend(text for i, (_, text) in enumerate(self.history) if i >= skip)
        if self.ended:
            sub.closed = True
        else:
            self.subscribers.add(sub)
        return sub, replay, gap

    def unsubscribe(self, sub: Subscriber) -> None:
        """Forget a subscriber (safe to call twice)."""
        self.subscribers.discard(sub)

    def info(self) -> dict[str, Any]:
        """The stream as listed by ``GET /streams``."""
        channels = self.hello.get("channels") if self.hello else None
        return {"id": self.id, "kind": self.kind, "source": self.hello.get("source") if self.hello else None,
                "started": round(self.started, 3),
                "started_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
                "live": not self.ended, "seq": self.seq, "subscribers": len(self.subscribers),
                "channels": channels,
                "current": [self.current[k] for k in sorted(self.current)],
                **({"capture": self.capture} if self.capture is not None else {})}


class Hub:
    """The server's streams by ID, with optional JSONL recording of every message.

    Args:
        history, max_queue: passed to each :class:`Stream`.
        record: path of a JSONL file that every stream's messages are appended to.
        retain_s: how long an ended ingest stream stays listed and replayable.
    """

    def __init__(self, *, history: int = 100_000, max_queue: int = 1024, record: str | Path | None = None,
                 retain_s: float = 600.0):
        self.history = history
        self.max_queue = max_queue
        self.retain_s = retain_s
        self.streams: dict[str, Stream] = {}
        self.reserved: set[str] = set()
        self._record: IO[str] | None = None
        self._record_path = record
        if record is not None:
            try:
                self._record = open(record, "a", encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"cannot open --record file {record}: {exc.strerror or exc}") from None

    def reserve(self, stream_id: str) -> bool:
        """Claim an ID for a new stream; False when a live stream or a claim holds it."""
        self.expire()
        old = self.streams.get(stream_id)
        if stream_id in self.reserved or (old is not None and not old.ended):
            return False
        self.reserved.add(stream_id)
        return True

    def release(self, stream_id: str) -> None:
        """Give back a claim that did not become a stream."""
        self.reserved.discard(stream_id)

    def create(self, stream_id: str, hello: dict[str, Any] | None = None, kind: str = "source") -> Stream:
        """A new stream under ``stream_id`` (replacing an ended one)."""
        self.reserved.discard(stream_id)
        rec = _Tagged(self._record, stream_id) if self._record is not None else None
        stream = Stream(stream_id, history=self.history, max_queue=self.max_queue, record=rec, kind=kind)
        if hello is not None:
            stream.set_hello(hello)
        self.streams[stream_id] = stream
        return stream

    def get(self, stream_id: str) -> Stream | None:
        """The stream with this ID, or None."""
        return self.streams.get(stream_id)

    def expire(self) -> None:
        """Forget ingest streams that ended more than ``retain_s`` ago."""
        now = time.time()
        for sid, s in list(self.streams.items()):
            if s.kind == "ingest" and s.ended and s.ended_at is not None and now - s.ended_at > self.retain_s:
                del self.streams[sid]

    def list(self, include_ended: bool = False) -> list[dict[str, Any]]:
        """:meth:`Stream.info` of each live stream (and of ended ones still kept, if asked)."""
        self.expire()
        return [s.info() for s in self.streams.values() if include_ended or not s.ended]

    def close(self) -> None:
        """Close every subscriber and the record file."""
        for s in self.streams.values():
            for sub in list(s.subscribers):
                sub.close()
        if self._record is not None:
            self._record.close()
            self._record = None


class _Tagged:
    """A record sink shared by streams: each line gets its stream's ID as ``"stream"``."""

    def __init__(self, fh: IO[str], stream_id: str):
        self.fh = fh
        self.prefix = '{"stream":' + json.dumps(stream_id, ensure_ascii=False) + ","

    def write(self, line: str) -> None:
        if self.fh.closed:
            raise ValueError("record file closed")
        # '{"type":...' -> '{"stream":"ID","type":...' (a hello names its stream already)
        tagged = line.startswith("{") and not line.startswith('{"type":"hello"')
        self.fh.write(self.prefix + line[1:] if tagged else line)

    def flush(self) -> None:
        self.fh.flush()
