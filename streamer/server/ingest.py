"""``/ingest?stream=ID``: one network audio stream, analysed in the thread pool, its timeline
published in the hub and sent back on the same connection."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time
from typing import Any, Callable

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from streamer import events, protocol
from streamer.codecs import bytes_per_sample, decode_pcm
from streamer.errors import EmostreamError, ProtocolError, ServiceUnavailable, UsageError
from streamer.server.budget import ByteBudget, MemoryGuard, trim_heap
from streamer.server.config import PipelineLike, ServerConfig
from streamer.server.hub import Hub, Stream, Subscriber
from streamer.server.wsio import abort_later, fail, pump

__all__ = ["IngestSession", "Feeder"]

log = logging.getLogger("emostream.server")

FEED_SECONDS = 4  # the most audio one pipeline call analyses at once


class IngestSession:
    """Serves ingest connections: start message, binary audio frames, stop.

    Args:
        hub: where the stream is published.
        pool: threads that run the pipelines.
        make_pipeline: (sample_rate, channels) -> pipeline.
        config: limits and timeouts.
        on_bytes: told the size of every audio frame received (metrics).
    """

    def __init__(self, hub: Hub, pool: concurrent.futures.Executor, make_pipeline: Callable[[int, int], PipelineLike],
                 config: ServerConfig, on_bytes: Callable[[int], None] | None = None,
                 guard: MemoryGuard | None = None):
        self.hub, self.pool, self.make_pipeline, self.config = hub, pool, make_pipeline, config
        self.on_bytes = on_bytes
        self.guard = guard
        # audio received and not analysed yet, all streams together (backpressure past it)
        self.budget = ByteBudget(getattr(config, "ingest_budget", 32 << 20))

    async def serve(self, ws: ServerConnection, params: dict[str, str]) -> None:
        """Run one ingest stream to its end, then close the connection (1000, or 1008 after an error)."""
        cfg = self.config
        sid = params.get("stream", "")
        try:
            protocol.check_stream_id(sid)  # the whole id: "abc\n" is not "abc"
        except ProtocolError as exc:
            return await fail(ws, f"ingest needs ?stream=ID: {exc}", cfg.drop_grace)
        if self.guard is not None and self.guard.over():  # 1013: try again later
            return await fail(ws, self.guard.refusal(), cfg.drop_grace, code=1013)
        try:
            claimed = await self.hub.claim(sid)
        except ServiceUnavailable as exc:  # the id cannot be checked cluster-wide: 1013, try again later
            log.warning("ingest %s refused: %s", sid, exc)
            return await fail(ws, f"{exc}; try again later", cfg.drop_grace, code=1013)
        if not claimed:
            return await fail(ws, f"stream ID {sid!r} is in use", cfg.drop_grace)
        loop = asyncio.get_running_loop()
        stream: Stream | None = None
        sub: Subscriber | None = None
        pipe: PipelineLike | None = None
        sender: asyncio.Future[None] | None = None
        failure: str | None = None
        try:
            try:
                start = await self._start(ws)
                pipe = await loop.run_in_executor(self.pool, self.make_pipeline, start.sample_rate, start.channels)
            except UsageError as exc:
                raise ProtocolError(str(exc)) from None
            hello = events.Hello.of(pipe, source=f"ingest:{sid}", encoding=start.encoding,
                                    input_rate=start.sample_rate, input_channels=start.channels)
            stream = self.hub.create(sid, hello, kind="ingest")
            sub, replay, _ = self.hub.subscribe(stream, 0, on_drop=abort_later(ws, cfg.drop_grace))
            sender = asyncio.ensure_future(pump(ws, sub, replay, cfg.write_limit))
            feed = Feeder(pipe, stream, self.pool, start, budget=self.budget)
            # While backpressure holds the socket unread, the peer's pongs are not read either: the
            # keepalive must not call that a dead peer (the idle timeout watches ingest instead).
            ws.ping_timeout = None
            stream.arrival = feed.arrival
            await self._run(ws, start, feed, sender)
        except ProtocolError as exc:
            failure = str(exc)
        except ConnectionClosed:
            pass
        except EmostreamError as exc:
            failure = f"pipeline failed: {exc}"
        finally:
            if stream is None:
                await self.hub.unclaim(sid)
            else:
                if failure and sub is not None and not sub.closed:
                    sub.push(events.encode(events.Error(failure)))
                try:
                    if pipe is not None:
                        stream.publish_many(await loop.run_in_executor(self.pool, pipe.finish))
                except Exception as exc:  # never leave a stream open
                    log.error("finishing stream %s failed: %s", sid, exc)
                stream.end()
            if sender is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(sender), cfg.drop_grace + 5)
                except (asyncio.TimeoutError, ConnectionClosed, Exception):
                    sender.cancel()
            if not self.hub.live_count():  # the last stream went: give its buffers back to the system
                loop.run_in_executor(self.pool, trim_heap)
        if failure and stream is None:
            return await fail(ws, failure, cfg.drop_grace)
        try:
            await ws.close(1008 if failure else 1000, protocol.close_reason(failure or "end of stream"))
        except ConnectionClosed:
            pass

    async def _start(self, ws: ServerConnection) -> protocol.Start:
        timeout = self.config.idle_timeout
        try:
            first = await asyncio.wait_for(ws.recv(), timeout)
        except asyncio.TimeoutError:
            raise ProtocolError(f"no start message within {timeout:g} s") from None
        if isinstance(first, bytes):
            raise ProtocolError("audio frame before the start message")
        start = protocol.parse_client(first)
        if not isinstance(start, protocol.Start):
            raise ProtocolError("the first message must be start")
        return start

    async def _run(self, ws: ServerConnection, start: protocol.Start, feed: "Feeder",
                   sender: asyncio.Future[None]) -> None:
        """Read audio until stop, watching the pipeline, the sender and the idle timeout."""
        loop = asyncio.get_running_loop()
        idle = self.config.idle_timeout
        last_rx = [loop.time()]
        reader = asyncio.ensure_future(self._read_audio(ws, start, feed, last_rx))
        try:
            while not reader.done():
                await asyncio.wait({reader, sender, feed.task}, timeout=min(1.0, idle),
                                   return_when=asyncio.FIRST_COMPLETED)
                if reader.done():
                    break
                if feed.task.done():
                    feed.task.result()  # raises the pipeline's error
                if sender.done():  # our sender died (dropped, or the peer went)
                    return
                if not feed.waiting and loop.time() - last_rx[0] > idle:  # held back by us is not idle
                    raise ProtocolError(f"no audio for {idle:g} s: stream closed")
            reader.result()
        finally:
            reader.cancel()
            await feed.drain()  # frames already read are analysed; never finish() beside a feed()

    async def _read_audio(self, ws: ServerConnection, start: protocol.Start, feed: "Feeder",
                          last_rx: list[float]) -> None:
        """Read binary frames into the feeder until ``stop`` (or the peer goes)."""
        limit = self.config.max_message
        frame = bytes_per_sample(start.encoding) * start.channels
        async for msg in ws:
            last_rx[0] = asyncio.get_running_loop().time()
            if isinstance(msg, bytes):
                if len(msg) > limit:
                    raise ProtocolError(f"frame of {len(msg)} bytes is larger than the limit ({limit})")
                if len(msg) % frame:
                    decode_pcm(msg, start.encoding, start.channels)  # raises the size error
                if msg:
                    if self.on_bytes is not None:
                        self.on_bytes(len(msg))
                    await feed.put(msg)
                    last_rx[0] = asyncio.get_running_loop().time()
                continue
            m = protocol.parse_client(msg)
            if isinstance(m, protocol.Stop):
                return
            raise ProtocolError("start sent twice")


class Feeder:
    """Decodes and feeds one ingest stream in the thread pool, one call at a time, in order.

    Frames (raw payloads, sizes already checked) that arrive while a call runs are joined into the
    next call, so a busy server makes fewer, larger calls instead of falling behind; past
    ``max_pending`` frames or ``max_pending_bytes``, or while the server-wide ``budget`` of
    unanalysed audio is spent, the reader waits: it stops reading the socket and TCP pushes back on
    the sender. It also notes when each frame arrived, so a window's latency can be measured from
    the arrival of its last sample.
    """

    def __init__(self, pipe: PipelineLike, stream: Stream, pool: concurrent.futures.Executor,
                 start: protocol.Start, max_pending: int = 64, max_pending_bytes: int = 2 << 20,
                 budget: ByteBudget | None = None):
        self.pipe, self.stream, self.pool = pipe, stream, pool
        self.encoding, self.channels, self.rate = start.encoding, start.channels, start.sample_rate
        self.frame_bytes = bytes_per_sample(start.encoding) * start.channels
        self.pending: list[Any] = []
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.pending_bytes = 0
        self.inflight = 0  # bytes the pipeline is analysing now
        self.waiting = False  # the reader is held back (backpressure)
        self.budget = budget if budget is not None else ByteBudget(1 << 62)
        self.have = asyncio.Event()
        self.closing = False
        self.received_s = 0.0  # audio seconds received so far
        # (audio seconds received up to and including a frame, time.monotonic() of its arrival)
        self.arrivals: collections.deque[tuple[float, float]] = collections.deque()
        self.task = asyncio.ensure_future(self._run())

    async def put(self, payload: bytes) -> None:
        """Queue one frame for analysis (waits while too many are queued)."""
        self.received_s += len(payload) / self.frame_bytes / self.rate
        self.arrivals.append((self.received_s, time.monotonic()))
        self.pending.append(payload)
        self.pending_bytes += len(payload)
        self.budget.take(len(payload))
        self.have.set()
        # wait while this stream is behind, or all streams together hold the budget (every frame
        # the pipeline takes gives bytes back, and wakes us)
        while not self.closing and not self.task.done() and self.pending_bytes + self.inflight > 0 and (
                len(self.pending) >= self.max_pending or self.pending_bytes >= self.max_pending_bytes
                or self.budget.over()):
            self.waiting = True
            try:
                await self.budget.changed()
            finally:
                self.waiting = False

    def arrival(self, t: float) -> float | None:
        """When audio time ``t`` (s) arrived (time.monotonic()); None if not received yet.

        Asked for window ends in rising order, so older frames are forgotten as it goes.
        """
        arrivals = self.arrivals
        while len(arrivals) > 1 and arrivals[0][0] < t - 1e-9:
            arrivals.popleft()
        if not arrivals or arrivals[0][0] < t - 1e-9:
            return None
        return arrivals[0][1]

    def _feed(self, payload: bytes) -> list[Any]:
        x = decode_pcm(payload, self.encoding, self.channels)
        step = FEED_SECONDS * self.rate
        if len(x) <= step:
            return self.pipe.feed(x)
        # a few seconds at a time: the analysis' scratch memory (frames, spectra) stays that of a few
        # seconds whatever the frame size a client chose (a 1 MiB frame is 32 s of 16 kHz audio),
        # and windows are still classified in batches
        out: list[Any] = []
        for i in range(0, len(x), step):
            out.extend(self.pipe.feed(x[i:i + step]))
        return out

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not self.pending:
                    if self.closing:
                        return
                    self.have.clear()
                    await self.have.wait()
                    continue
                blocks, self.pending = self.pending, []
                size, self.pending_bytes = self.pending_bytes, 0
                payload = blocks[0] if len(blocks) == 1 else b"".join(blocks)
                del blocks
                self.inflight = size
                try:
                    events = await loop.run_in_executor(self.pool, self._feed, payload)
                finally:
                    self.inflight = 0
                    self.budget.give(size)
                self.stream.publish_many(events)
        finally:  # a pipeline error: what was never analysed is let go too
            self.budget.give(self.pending_bytes)
            self.pending_bytes = 0
            self.pending = []

    async def drain(self) -> None:
        """Analyse every frame put so far, then stop; raises the pipeline's error, if any."""
        self.closing = True
        self.have.set()
        self.budget.give(0)  # wakes a reader waiting for room
        await asyncio.shield(self.task)
