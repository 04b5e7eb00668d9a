"""Streams of timeline messages, their subscribers, and the backend that stores them.

The server talks only to a :class:`Hub`. The hub owns the streams this process serves and every
subscriber's bounded queue; what is stored where, and what other processes can see, sits behind a
:class:`HubBackend` (:class:`~streamer.server.memory.MemoryBackend` in one process; a Redis backend
shares streams between nodes). The server does not know which backend it has.

A :class:`Stream` numbers its messages (``seq`` +1 per message, from 1), stores each event as a
:class:`Message` (encoded to its JSON text frame once, the first time it is sent or read), keeps a
bounded history in the backend for ``since`` replay, optionally appends every message to a JSONL
file, and fans each message out to its subscribers. Every subscriber has a bounded queue of frames:
publishing never waits on a subscriber, and one whose queue overflows is dropped (it is sent an
``error`` and closed). The hub's own subscribers (the wallboard feed) get every stream's messages,
each with a ``"stream"`` field.

Everything here runs on the event loop's thread; producers on other threads hand events over with
``loop.call_soon_threadsafe(stream.publish_many, events)``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from pathlib import Path
from typing import IO, Any, Awaitable, Callable, Iterable, Protocol

from streamer import events, protocol
from streamer.errors import ServiceUnavailable, UsageError
from streamer.server import journal
from streamer.server.backend import HubBackend, HubObserver
from streamer.server.memory import MemoryBackend
from streamer.server.message import Event, Message, stream_frame, wire

__all__ = ["Subscriber", "Stream", "Hub", "HubBackend", "HubObserver", "Message", "Event", "wire", "stream_frame"]

log = logging.getLogger("emostream.hub")

class _Owner(Protocol):
    def unsubscribe(self, sub: "Subscriber") -> None: ...


class Subscriber:
    """One subscriber's bounded queue of frames.

    Its connection calls :meth:`run` (send what waits, then every new frame until closed); tests
    and simple owners may instead loop ``await sub.wait()`` / ``sub.take()``.
    """

    def __init__(self, owner: _Owner, max_queue: int, on_drop: Callable[["Subscriber"], None] | None = None):
        self.stream = owner
        self.max_queue = max_queue
        self.queue: collections.deque[str] = collections.deque()
        self.event = asyncio.Event()
        self.closed = False
        self.dropped: str | None = None  # why it was dropped, when it was
        self.on_drop = on_drop
        self.sent = 0
        # numbered frames up to this seq are not for this subscriber (it resumed with since=): a
        # stream followed from another node may still be catching up when it subscribes
        self.after = 0
        # while run() sends nothing, a frame may go out at once through try_send (no queueing)
        self._try_send: Callable[[str], bool] | None = None
        self._busy = False

    def push(self, text: str) -> None:
        """Send one frame now if the connection can take it without waiting, else queue it;
        drop the subscriber when its queue is full."""
        if self.closed:
            return
        if self._try_send is not None and not self.queue and not self._busy and self._try_send(text):
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
        self.queue.append(events.encode(events.Error(reason)))
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

    async def run(self, send: Callable[[str], Awaitable[None]], replay: Iterable[str] = (),
                  try_send: Callable[[str], bool] | None = None) -> None:
        """Send ``replay``, then every frame published, until the subscriber is closed and drained.

        Args:
            send: sends one frame with flow control (waits while the peer is slow).
            replay: frames to send first (hello, history).
            try_send: writes one frame at once if the connection can take it without waiting
                (True), else declines (False); while nothing waits in the queue, live frames go
                out this way straight from the producer, with no task switch.
        """
        self._busy = True
        try:
            for text in replay:
                if self.dropped:
                    break
                await send(text)
            self._busy = False
            self._try_send = try_send
            while True:
                await self.wait()
                self._busy = True
                for text in self.take():
                    await send(text)
                self._busy = False
                if self.closed and not self.queue:
                    return
        finally:
            self._try_send = None
            self._busy = False


class Stream:
    """One timeline: numbered messages, bounded history (in the backend), subscribers, record.

    Args:
        stream_id: the stream's name (``main`` for a server's own source, else the ingest ID).
        history: messages kept for ``since`` replay (when the stream makes its own memory backend).
        max_queue: frames a subscriber may have waiting before it is dropped.
        record: a file object to append each message to as one JSON line (flushed per message).
        kind: ``source``, ``ingest`` or ``remote`` (another node's stream, followed).
        backend: where the history goes (default: a memory backend of its own).
        on_publish: called with each numbered message after its subscribers got it (the hub's).
    """

    def __init__(self, stream_id: str, *, history: int = 100_000, max_queue: int = 1024,
                 record: IO[str] | None = None, kind: str = "source", backend: HubBackend | None = None,
                 on_publish: Callable[["Stream", Message], None] | None = None):
        if backend is None:
            backend = MemoryBackend(history=history)
        self.id = stream_id
        self.kind = kind
        self.started = time.time()
        self.ended_at: float | None = None
        self.hello: dict[str, Any] | None = None
        self.hello_text: str | None = None
        self.seq = 0
        self.backend = backend
        self.max_queue = max_queue
        self.record = record
        self.subscribers: set[Subscriber] = set()
        self.current: dict[int, dict[str, Any]] = {}  # channel -> latest window summary
        self.capture: dict[str, Any] | None = None     # a live source's capture health, if known
        self.alerts = 0
        self.last_alert: dict[str, Any] | None = None
        self.ended = False
        self.on_publish = on_publish
        # audio time (s) -> time.monotonic() when that audio reached the server; None if unknown
        self.arrival: Callable[[float], float | None] | None = None
        # messages up to this seq are history, not news, for the feed (another node's stream followed late)
        self.feed_after = 0

    # -- producing -------------------------------------------------------------------------

    def set_hello(self, hello: Event) -> None:
        """The stream's hello (sent first to every subscriber, no seq)."""
        msg = {k: v for k, v in wire(hello).items() if k != "type"}
        msg = {"type": "hello", **msg}
        if isinstance(msg.get("started"), (int, float)):  # another node's stream keeps its start
            self.started = float(msg["started"])
        msg.setdefault("stream", self.id)
        msg.setdefault("started", round(self.started, 3))  # tells a resuming client it is the same stream
        self.hello = msg
        hello_msg = Message(None, msg)
        self.hello_text = hello_msg.text
        if self.kind != "remote":
            self.backend.start(self.id, hello_msg, self.kind)
        self._record(self.hello_text)

    def publish(self, event: Event) -> int:
        """Number one event, keep it, record it and send it to every subscriber; returns its seq."""
        if self.ended:
            return self.seq
        self.seq += 1
        self._deliver(Message(self.seq, event))
        return self.seq

    def publish_many(self, events: Iterable[Event]) -> None:
        """Publish events in order."""
        for ev in events:
            self.publish(ev)

    def relay(self, message: Message) -> None:
        """Publish a message numbered elsewhere (another node's stream, followed): its seq is kept."""
        if self.ended or message.seq is None:
            if message.seq is None and message.type == "error":
                self._fan_out(message.text)
            return
        self.seq = message.seq
        self._deliver(message)
        if message.type == "end":
            self._close()

    def _deliver(self, message: Message) -> None:
        self.backend.append(self.id, message)
        kind = message.type
        if kind == "window" or kind == "alert":
            self._note(kind, message.wire())
        if self.record is not None:
            self._record(message.text)
        if self.subscribers:
            self._fan_out(message.text, message.seq)
        if self.on_publish is not None:
            self.on_publish(self, message)
        message.settle()

    def _note(self, kind: str, msg: dict[str, Any]) -> None:
        if kind == "alert":
            self.alerts += 1
            self.last_alert = msg
            return
        self.current[int(msg.get("channel", 0) or 0)] = window_summary(msg)

    def _fan_out(self, text: str, seq: int | None = None) -> None:
        for sub in list(self.subscribers):
            if seq is None or seq > sub.after:
                sub.push(text)

    def error(self, message: str) -> None:
        """Send an ``error`` (no seq, not kept) to the current subscribers."""
        self._fan_out(events.encode(events.Error(message)))

    def end(self) -> None:
        """Publish ``end``; the stream keeps its history, and its subscribers are closed after it."""
        if self.ended:
            return
        self.publish({"type": "end"})
        if self.kind != "remote":
            self.backend.end(self.id)
        self._close()

    def _close(self) -> None:
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
            go to the subscriber's queue, so replay + queue has nothing lost or repeated; those
            with seq <= ``since`` never do (a followed stream that is still catching up relays them).
        """
        sub = Subscriber(self, self.max_queue, on_drop)
        sub.after = since
        replay: list[str] = [self.hello_text] if self.hello_text else []
        kept, gap = self.backend.read_since(self.id, since)
        replay.extend(m.text for m in kept)
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
                "alerts": self.alerts, "last_alert": self.last_alert,
                **({"capture": self.capture} if self.capture is not None else {})}


def window_summary(window: dict[str, Any]) -> dict[str, Any]:
    """What ``GET /streams`` shows (``current``) of a stream's latest window on one channel; one
    definition for this node's streams and the ones other nodes share through the backend."""
    return {"channel": window.get("channel", 0), "channel_name": window.get("channel_name"),
            "label": window.get("label"), "confidence": window.get("confidence"),
            "speech": window.get("speech"), "start": window.get("start"), "end": window.get("end"),
            **({"band": window["band"]} if window.get("band") else {})}


class _Feed:
    """The hub's own subscribers: every stream's messages (the wallboard feed)."""

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)


class Hub:
    """The streams this server serves, by ID, over a :class:`HubBackend`.

    Args:
        history, max_queue: passed to each :class:`Stream`.
        record: path of a JSONL file that every stream's messages are appended to. A partial last
            line (a crash mid-write) is cut off first; with the in-memory backend the latest run
            of every stream in it is served again (ended), so ``?since=`` works across a restart.
        retain_s: how long an ended ingest stream stays listed and replayable.
        backend: storage and other nodes (default: :class:`~streamer.server.memory.MemoryBackend`).
        observer: told of every published message and dropped subscriber (metrics).
    """

    def __init__(self, *, history: int = 100_000, max_queue: int = 1024, record: str | Path | None = None,
                 retain_s: float = 600.0, backend: HubBackend | None = None, observer: HubObserver | None = None):
        if backend is None:
            backend = MemoryBackend(history=history)
        self.backend = backend
        self.history = history
        self.max_queue = max_queue
        self.retain_s = retain_s
        self.observer = observer
        self.streams: dict[str, Stream] = {}
        self.reserved: set[str] = set()
        self._feed = _Feed()
        self._followers: dict[str, asyncio.Task[None]] = {}
        self._discovery: asyncio.Task[None] | None = None
        self.discover_s = 2.0  # how often a connected feed looks for other nodes' new streams
        self._record: IO[str] | None = None
        self.record_path: str | None = None
        if record is not None:
            try:
                journal.repair_tail(record)
                self._record = open(record, "a", encoding="utf-8")
                self.record_path = str(record)
                if isinstance(backend, MemoryBackend):
                    self._restore(journal.load(record, max_bytes=backend.total_bytes, per_stream=history))
            except OSError as exc:
                raise UsageError(f"cannot open --record file {record}: {exc.strerror or exc}") from None

    def _restore(self, runs: list["journal.Run"]) -> None:
        """Serve again, as ended streams, the runs a previous server recorded."""
        for run in runs:
            kind = "ingest" if "encoding" in run.hello else "source"
            stream = Stream(run.stream_id, history=self.history, max_queue=self.max_queue, kind=kind,
                            backend=self.backend)
            stream.set_hello(run.hello)
            for seq, text in run.messages:
                stream.relay(Message(seq, text=text))
            if not stream.ended:
                stream._close()  # its server stopped: the run is over
            self.backend.end(run.stream_id)
            self.streams[run.stream_id] = stream

    # -- stream IDs ------------------------------------------------------------------------

    def reserve(self, stream_id: str) -> bool:
        """Claim an ID in this process; False when a live stream or a claim here holds it."""
        self.expire()
        old = self.streams.get(stream_id)
        if stream_id in self.reserved or (old is not None and not old.ended and old.kind != "remote"):
            return False
        self.reserved.add(stream_id)
        return True

    async def claim(self, stream_id: str) -> bool:
        """Claim an ID here and in the backend (cluster-wide); False when it is in use anywhere.

        Raises:
            ServiceUnavailable: the backend cannot be asked (the claim here is given back).
        """
        if not self.reserve(stream_id):
            return False
        try:
            ok = await self.backend.claim(stream_id)
        except BaseException:
            self.reserved.discard(stream_id)
            raise
        if not ok:
            self.reserved.discard(stream_id)
        return ok

    def release(self, stream_id: str) -> None:
        """Give back a local claim that did not become a stream."""
        self.reserved.discard(stream_id)

    async def unclaim(self, stream_id: str) -> None:
        """Give back a claim (here and in the backend) that did not become a stream."""
        self.release(stream_id)
        await self.backend.release(stream_id)

    # -- streams ---------------------------------------------------------------------------

    def create(self, stream_id: str, hello: Event | None = None, kind: str = "source") -> Stream:
        """A new stream under ``stream_id`` (replacing an ended one)."""
        self.reserved.discard(stream_id)
        self._stop_following(stream_id)
        old = self.streams.get(stream_id)
        if old is not None and old.kind == "remote" and not old.ended:
            old._close()  # nothing feeds it any more: its subscribers must not wait for an end
        rec = _Tagged(self._record, stream_id) if self._record is not None and kind != "remote" else None
        backend = self.backend
        if kind == "remote":  # another node's: a local cache of what we followed
            backend = MemoryBackend(history=self.history)
        stream = Stream(stream_id, history=self.history, max_queue=self.max_queue, record=rec, kind=kind,
                        backend=backend, on_publish=self._published)
        if hello is not None:
            stream.set_hello(hello)
            self._to_feed(stream, stream.hello_text or "")
        self.streams[stream_id] = stream
        return stream

    def get(self, stream_id: str) -> Stream | None:
        """The stream with this ID held here, or None."""
        return self.streams.get(stream_id)

    async def find(self, stream_id: str, known_seq: int | None = None) -> Stream | None:
        """The stream to subscribe to: one produced here, else another node's (followed through
        the backend from its first message and kept here as a ``remote`` stream), else None.

        ``known_seq`` is the seq the other node's stream has reached (from a listing); what came
        before it is history, which the feed of every stream does not repeat.

        Raises:
            ServiceUnavailable: the backend cannot be asked and nothing of the stream is held here.
        """
        stream = self.streams.get(stream_id)
        if stream is not None and (stream.kind != "remote" or stream_id in self._followers):
            return stream
        try:
            hello = await self.backend.lookup(stream_id)
        except Exception as exc:  # the backend is out: what this node holds is all there is
            if stream is None and isinstance(exc, ServiceUnavailable):
                raise  # nothing held here: the caller says "try again later", not "no such stream"
            log.warning("looking up stream %s failed: %s", stream_id, exc)
            return stream
        if hello is None:
            return stream  # an ended followed stream stays readable here until it expires
        if known_seq is None:
            rows = [r for r in await self.backend.list_streams() if r.get("id") == stream_id]
            known_seq = int(rows[0].get("seq") or 0) if rows else 0
        # checked after the last await: two subscribers finding the same stream at once must share
        # one follower (a second create would cancel the first's and leave its subscribers hanging)
        current = self.streams.get(stream_id)
        if current is not None and (current.kind != "remote" or stream_id in self._followers
                                    or (current.hello or {}).get("started") == hello.wire().get("started")):
            return current  # made meanwhile, or the same stream (ended) we followed already
        stream = self.create(stream_id, hello.wire(), kind="remote")
        stream.feed_after = known_seq
        self._followers[stream_id] = asyncio.get_running_loop().create_task(self._follow(stream))
        return stream

    async def _follow(self, stream: Stream) -> None:
        try:
            async for message in self.backend.follow(stream.id, 0):
                stream.relay(message)
                if stream.ended:
                    break
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the backend failed: tell the subscribers, end here
            log.error("following stream %s failed: %s", stream.id, exc)
            stream.error(f"stream {stream.id} is no longer reachable: {exc}")
        finally:
            if self._followers.get(stream.id) is asyncio.current_task():  # not a newer follower's entry
                del self._followers[stream.id]
        if not stream.ended:  # the backend gave up on it without an end
            stream.error(f"stream {stream.id} stopped without its end: its node may be gone")
            stream._close()

    def _stop_following(self, stream_id: str) -> None:
        task = self._followers.pop(stream_id, None)
        if task is not None:
            task.cancel()

    def _expired(self, stream: Stream) -> bool:
        return stream.ended and stream.ended_at is not None and time.time() - stream.ended_at > self.retain_s

    def expire(self) -> None:
        """Forget ingest (and followed) streams that ended more than ``retain_s`` ago."""
        for sid, s in list(self.streams.items()):
            if s.kind in ("ingest", "remote") and self._expired(s):
                del self.streams[sid]
                if s.kind != "remote":
                    self.backend.forget(sid)

    def list(self, include_ended: bool = False) -> list[dict[str, Any]]:
        """:meth:`Stream.info` of each live stream held here (and of ended ones still kept, if asked)."""
        self.expire()
        return [s.info() for s in self.streams.values() if s.kind != "remote" and (include_ended or not s.ended)]

    async def list_all(self, include_ended: bool = False) -> list[dict[str, Any]]:
        """:meth:`list` plus the other nodes' streams the backend knows (``GET /streams``); only
        this node's when the backend cannot list (its ``health`` says why)."""
        rows = self.list(include_ended)
        if self.backend.node_id is not None:  # in a cluster every row names its node, ours too
            rows = [{**r, "node": self.backend.node_id} for r in rows]
        mine = {r["id"] for r in rows}
        try:
            others = await self.backend.list_streams()
        except Exception as exc:
            log.warning("listing other nodes' streams failed: %s", exc)
            others = []
        for row in others:
            if row.get("id") not in mine and (include_ended or row.get("live", True)):
                rows.append(row)
        return rows

    def live_count(self) -> int:
        """Live streams produced here."""
        return sum(1 for s in self.streams.values() if not s.ended and s.kind != "remote")

    def subscriber_count(self) -> int:
        """Subscribers of every stream plus those of the feed."""
        return sum(len(s.subscribers) for s in self.streams.values()) + len(self._feed.subscribers)

    # -- the feed of every stream ----------------------------------------------------------

    async def watch(self, max_queue: int, on_drop: Callable[[Subscriber], None] | None = None
                    ) -> tuple[Subscriber, list[str]]:
        """A subscriber to every live stream (the wallboard feed), plus its first frames:
        ``{"type":"streams","streams":[...]}`` (as ``GET /streams``) and each live stream's hello.

        Afterwards it gets each stream's hello, window, segment, alert and end as they happen,
        each with ``"stream": ID`` (the stream's own seq). Other nodes' streams (a shared backend)
        are followed from where they are, and new ones are found every :attr:`discover_s`.
        """
        rows = await self.list_all()
        for row in rows:
            if row.get("live", True) and self._unknown(row["id"]):
                await self._try_find(row)
        sub = Subscriber(self._feed, max_queue, self._dropped(on_drop))
        live = [s for s in self.streams.values() if not s.ended]
        first = [protocol.encode({"type": "streams", "streams": rows})]
        first += [s.hello_text for s in live if s.hello_text]
        self._feed.subscribers.add(sub)
        if self._discovery is None or self._discovery.done():
            self._discovery = asyncio.get_running_loop().create_task(self._discover())
        return sub, first

    def _unknown(self, stream_id: str) -> bool:
        s = self.streams.get(stream_id)
        return s is None or (s.kind == "remote" and stream_id not in self._followers)

    async def _try_find(self, row: dict[str, Any]) -> None:
        try:
            await self.find(row["id"], known_seq=int(row.get("seq") or 0))
        except Exception as exc:  # a backend in trouble: its /health says so; the feed goes on
            log.warning("cannot follow stream %s: %s", row.get("id"), exc)

    async def _discover(self) -> None:
        """While a feed is connected, follow the streams other nodes start."""
        while self._feed.subscribers:
            await asyncio.sleep(self.discover_s)
            try:
                rows = await self.backend.list_streams()
            except Exception as exc:
                log.warning("listing the cluster's streams failed: %s", exc)
                continue
            for row in rows:
                if row.get("live") and self._unknown(row["id"]) and self._feed.subscribers:
                    await self._try_find(row)

    def _dropped(self, on_drop: Callable[[Subscriber], None] | None) -> Callable[[Subscriber], None]:
        def dropped(sub: Subscriber) -> None:
            if self.observer is not None:
                self.observer.dropped(sub)
            if on_drop is not None:
                on_drop(sub)
        return dropped

    def subscribe(self, stream: Stream, since: int = 0, on_drop: Callable[[Subscriber], None] | None = None
                  ) -> tuple[Subscriber, list[str], int | None]:
        """:meth:`Stream.subscribe`, with dropped subscribers reported to the observer."""
        return stream.subscribe(since, self._dropped(on_drop))

    def _published(self, stream: Stream, message: Message) -> None:
        if self.observer is not None and stream.kind != "remote":  # counted by the node that made it
            self.observer.published(stream, message)
        if (self._feed.subscribers and message.type in ("window", "segment", "alert", "end")
                and (message.seq or 0) > stream.feed_after):
            self._to_feed(stream, stream_frame(stream.id, message.text))

    def _to_feed(self, stream: Stream, text: str) -> None:
        if text:
            for sub in list(self._feed.subscribers):
                sub.push(text)

    async def aclose(self) -> None:
        """:meth:`close`, stop following other nodes' streams, and close the backend."""
        self.close()
        if self._discovery is not None:
            self._discovery.cancel()
        for sid in list(self._followers):
            self._stop_following(sid)
        await self.backend.close()

    def close(self) -> None:
        """Close every subscriber and the record file (no backend I/O)."""
        for s in self.streams.values():
            for sub in list(s.subscribers):
                sub.close()
        for sub in list(self._feed.subscribers):
            sub.close()
        if self._record is not None:
            self._record.close()
            self._record = None


class _Tagged:
    """A record sink shared by streams: each line gets its stream's ID as ``"stream"``."""

    def __init__(self, fh: IO[str], stream_id: str):
        self.fh = fh
        self.stream_id = stream_id

    def write(self, line: str) -> None:
        if self.fh.closed:
            raise ValueError("record file closed")
        self.fh.write(stream_frame(self.stream_id, line))

    def flush(self) -> None:
        self.fh.flush()
