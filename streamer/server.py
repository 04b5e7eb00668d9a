"""The asyncio server: web page, timeline subscribers, network ingest, stream list, uploads.

Routes (one port):

    GET  /                     the web page (streamer/web/index.html) and its static files
    GET  /ws[?since=N][&stream=ID]   WebSocket: a stream's hello, then every message after seq N
    GET  /ingest?stream=ID     WebSocket: start, binary audio frames, stop; answers the timeline
    GET  /streams              JSON list of streams: id, start time, current emotion per channel
    POST /label                an uploaded recording (raw body or multipart) -> the label -f json object

WebSockets and GET requests go through the ``websockets`` library. It parses only GET requests,
so each connection's first bytes are sniffed: a request that does not start with ``GET `` is read
and answered by a small HTTP/1.1 reader (:class:`streamer.httpio.SniffingConnection`) on the same port.

CPU work never runs on the event loop: a file or microphone source runs the blocking
``pipeline.run`` in a thread and hands events over with ``call_soon_threadsafe``; ingest streams
run ``Pipeline.feed`` in a small thread pool, one frame at a time per stream.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import functools
import hmac
import ipaddress
import logging
import os
import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import OPEN

from streamer import protocol
from streamer.codecs import bytes_per_sample, decode_pcm
from streamer.errors import EmostreamError, InputError, ProtocolError, UsageError
from streamer.hub import Hub, Stream, Subscriber
from streamer.httpio import SniffingConnection as _Connection
from streamer.httpio import error_response as _error_response
from streamer.httpio import json_response as _json_response
from streamer.httpio import response as _response
from streamer.httpio import suffix_for as _suffix_for
from streamer.httpio import upload_payload as _upload_payload

__all__ = ["ServerConfig", "EmoServer", "PipelineLike", "is_loopback", "WEB_DIR"]

log = logging.getLogger("emostream.server")

WEB_DIR = Path(__file__).resolve().parent / "web"
MAIN_STREAM = "main"
_STREAM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$")
_STATIC = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
           ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
           ".ico": "image/x-icon", ".json": "application/json"}


class PipelineLike(Protocol):
    """What the server needs of a pipeline (streamer.pipeline.Pipeline has it)."""

    def hello(self, source: str) -> dict[str, Any]: ...
    def feed(self, block: Any) -> list[dict[str, Any]]: ...
    def finish(self) -> list[dict[str, Any]]: ...


PipelineFactory = Callable[[int, int], PipelineLike]   # (sample_rate, channels) -> pipeline
Labeler = Callable[[str, str], dict[str, Any]]          # (path, display name) -> label -f json object
SourceRunner = Callable[..., Any]                        # streamer.pipeline.run


@dataclass
class ServerConfig:
    """Server settings (the ``serve`` command fills them from its options)."""

    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    origins: list[str] = field(default_factory=list)  # extra allowed browser origins
    max_message: int = 1 << 20        # largest WebSocket message accepted (bytes)
    max_upload: int = 50 << 20        # largest POST /label body (bytes)
    max_queue: int = 1024             # frames a subscriber may have waiting before it is dropped
    history: int = 100_000            # messages kept per stream for since replay
    record: str | None = None         # JSONL file that every message is appended to
    idle_timeout: float = 30.0        # an ingest stream that sends nothing this long is closed
    open_timeout: float = 10.0        # to send a request head / finish the WebSocket handshake
    drop_grace: float = 2.0           # a dropped subscriber's connection is aborted after this
    write_limit: int = 64 * 1024      # bytes buffered for a subscriber before its frames queue
    health_s: float = 5.0             # how often a live source's capture health is checked
    workers: int = 2                  # threads running ingest pipelines
    label_jobs: int = 1               # uploads labelled at once (others wait)
    web_dir: Path = WEB_DIR


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class EmoServer:
    """The emostream server: one hub of streams behind one port.

    Args:
        config: settings.
        pipeline_factory: makes a pipeline for (sample_rate, channels); default from the model.
        labeler: labels an uploaded file for ``POST /label``; default from the model.
        runner: drives a pull source through a pipeline (default ``streamer.pipeline.run``).
    """

    def __init__(self, config: ServerConfig | None = None, *, pipeline_factory: PipelineFactory | None = None,
                 labeler: Labeler | None = None, runner: SourceRunner | None = None):
        self.config = config or ServerConfig()
        self.pipeline_factory = pipeline_factory
        self.labeler = labeler
        self.runner = runner
        self.hub = Hub(history=self.config.history, max_queue=self.config.max_queue, record=self.config.record)
        self.pool = concurrent.futures.ThreadPoolExecutor(max(1, self.config.workers), thread_name_prefix="emostream-ingest")
        self._server: Server | None = None
        self._label_sem: asyncio.Semaphore | None = None
        self._stops: list[threading.Event] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._http_conns: set[_Connection] = set()
        self._closed = False

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start serving.

        Raises:
            UsageError: a non-loopback host without a token, or the port is in use.
        """
        cfg = self.config
        if not is_loopback(cfg.host) and not cfg.token:
            raise UsageError(f"binding to {cfg.host} (beyond this machine) needs --token or $EMOSTREAM_TOKEN")
        self._label_sem = asyncio.Semaphore(max(1, cfg.label_jobs))
        try:
            self._server = await serve(
                self._handler, cfg.host, cfg.port,
                process_request=self._process_request,
                create_connection=functools.partial(_Connection, app=self),
                max_size=max(4 << 20, 2 * cfg.max_message),
                open_timeout=None,  # _Connection applies its own (the POST path needs longer)
                ping_interval=20, ping_timeout=20, close_timeout=5,
                compression=None,
            )
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL) or "address already in use" in str(exc):
                what = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
                raise UsageError(f"port {cfg.port} on {cfg.host} {what}") from None
            raise UsageError(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}") from None

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        assert self._server is not None, "server not started"
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        """``http://HOST:PORT/`` of the page."""
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    async def close(self) -> None:
        """Stop sources, close every connection, wait for handlers; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for stop in self._stops:
            stop.set()
        for t in list(self._tasks):
            t.cancel()
        for conn in list(self._http_conns):  # uploads being read or labelled
            conn.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.hub.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> "EmoServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- pipelines -------------------------------------------------------------------------

    def _make_pipeline(self, rate: int, channels: int) -> PipelineLike:
        if self.pipeline_factory is None:
            raise EmostreamError("this server has no pipeline factory")
        return self.pipeline_factory(rate, channels)

    def start_source(self, source: Any, *, realtime: bool = False, stream_id: str = MAIN_STREAM
                     ) -> asyncio.Task[Any]:
        """Analyse a pull source (file, microphone) in a thread, publishing to stream ``stream_id``.

        The stream keeps its whole history after the source ends. Returns the task; its result
        is the runner's stats.
        """
        pipe = self._make_pipeline(source.sample_rate, source.channels)
        stream = self.hub.create(stream_id, pipe.hello(source=source.uri), kind="source")
        stop = threading.Event()
        self._stops.append(stop)
        return self._spawn(self._run_source(source, pipe, stream, realtime, stop))

    async def _run_source(self, source: Any, pipe: PipelineLike, stream: Stream, realtime: bool,
                          stop: threading.Event) -> Any:
        loop = asyncio.get_running_loop()
        runner = self.runner
        if runner is None:
            from streamer.pipeline import run as runner

        def on_events(events: list[dict[str, Any]]) -> None:
            loop.call_soon_threadsafe(stream.publish_many, list(events))

        stats = None
        health = self._spawn(self._watch_capture(source, stream)) if hasattr(source, "stats") else None
        try:
            stats = await asyncio.to_thread(runner, source, pipe, on_events, realtime=realtime, stop=stop)
            for w in getattr(stats, "warnings", []) or []:
                stream.error(f"warning: {w}")
            if getattr(stats, "overruns", 0):
                stream.error(f"warning: {stats.overruns} ring buffer overrun(s), "
                             f"{getattr(stats, 'dropped_frames', 0)} frames dropped")
        except EmostreamError as exc:
            log.error("source %s failed: %s", getattr(source, "uri", "?"), exc)
            stream.error(str(exc))
        finally:
            stop.set()
            if health is not None:
                health.cancel()
            try:
                source.close()
            except Exception:  # closing is best effort
                pass
            await asyncio.sleep(0)  # let queued call_soon_threadsafe batches land first
            stream.end()
        return stats

    async def _watch_capture(self, source: Any, stream: Stream) -> None:
        """Report a live source's lost audio (input overflows, ring overruns) in its stream.

        ``source.stats()`` (e.g. MicSource) is polled every ``health_s``; any increase goes out as
        an ``error`` message starting with ``warning:``, and ``GET /streams`` shows the totals.
        """
        keys = ("overflows", "overruns", "dropped_frames")
        last = {k: 0 for k in keys}
        while True:
            await asyncio.sleep(self.config.health_s)
            try:
                st = dict(source.stats())
            except Exception:  # a closing device: nothing to report
                continue
            stream.capture = st
            grew = {k: int(st.get(k) or 0) - last[k] for k in keys}
            if any(v > 0 for v in grew.values()):
                last = {k: int(st.get(k) or 0) for k in keys}
                stream.error(f"warning: {st.get('device', source.uri)}: audio lost in the last "
                             f"{self.config.health_s:g} s: {grew['overflows']} input overflow(s), "
                             f"{grew['overruns']} ring overrun(s), {grew['dropped_frames']} frames dropped "
                             f"(totals {last['overflows']}, {last['overruns']}, {last['dropped_frames']})")

    # -- HTTP (GET) routing, authentication, origin ----------------------------------------

    def check_request(self, method: str, path: str, headers: Any) -> Response | None:
        """Token and Origin checks for any request; an error response or None when allowed."""
        cfg = self.config
        if cfg.token:
            query = parse_qs(urlsplit(path).query)
            given = (query.get("token") or [""])[-1]
            auth = headers.get("Authorization") or ""
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            if not given or not hmac.compare_digest(given.encode(), cfg.token.encode()):
                return _error_response(401, "missing or wrong token (use ?token= or Authorization: Bearer)")
        origin = headers.get("Origin")
        if origin is not None and not self._origin_ok(origin, headers.get("Host") or ""):
            return _error_response(403, f"origin {origin!r} not allowed")
        return None

    def _origin_ok(self, origin: str, host: str) -> bool:
        if origin in self.config.origins:
            return True
        try:
            netloc = urlsplit(origin).netloc
        except ValueError:
            return False
        return bool(netloc) and netloc.lower() == host.lower()

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        denied = self.check_request(request.method, request.path, request.headers)
        if denied is not None:
            return denied
        url = urlsplit(request.path)
        route = url.path
        upgrade = "websocket" in (request.headers.get("Upgrade") or "").lower()
        if route in ("/ws", "/ingest"):
            if not upgrade:
                return _error_response(426, f"{route} is a WebSocket endpoint")
            return None
        if upgrade:
            return _error_response(404, f"no WebSocket endpoint at {route}")
        if route == "/streams":
            everything = (parse_qs(url.query).get("all") or ["0"])[-1] not in ("0", "", "false")
            return _json_response(200, self.hub.list(include_ended=everything))
        if route == "/label":
            return _error_response(405, "POST an audio file to /label")
        return self._static(route)

    def _static(self, route: str) -> Response:
        name = "index.html" if route in ("/", "/index.html") else route.lstrip("/")
        if "/" in name or "\\" in name or name.startswith(".") or Path(name).suffix not in _STATIC:
            return _error_response(404, f"not found: {route}")
        path = self.config.web_dir / name
        try:
            body = path.read_bytes()
        except OSError:
            return _error_response(404, f"not found: {route}")
        return _response(200, body, _STATIC[path.suffix])

    # -- WebSocket handlers ----------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        url = urlsplit(ws.request.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if url.path == "/ingest":
                await self._ingest(ws, params)
            else:
                await self._subscribe(ws, params)
        except ConnectionClosed:
            pass

    async def _fail(self, ws: ServerConnection, message: str, code: int = 1008) -> None:
        """Send an ``error`` and close the connection cleanly."""
        try:
            await asyncio.wait_for(ws.send(protocol.encode(protocol.error(message))), self.config.drop_grace)
            await ws.close(code, message[:120])
        except (ConnectionClosed, asyncio.TimeoutError):
            ws.transport.abort()

    def _on_drop(self, ws: ServerConnection) -> Callable[[Subscriber], None]:
        def dropped(sub: Subscriber) -> None:
            # the pump sends the error and closes; a peer that reads nothing is cut off after the grace
            asyncio.get_running_loop().call_later(self.config.drop_grace, _abort_if_open, ws)
        return dropped

    async def _pump(self, ws: ServerConnection, sub: Subscriber, replay: list[str]) -> None:
        """Send the replay then every queued frame until the subscriber closes.

        Once the replay is out, live frames take a fast path: written straight to the connection
        by the producer (``broadcast``) while nothing waits in the queue and the connection's write
        buffer is small; otherwise they queue and this task sends them with flow control.
        """
        sub.busy = True
        for text in replay:
            if sub.dropped:
                break
            await ws.send(text)
        sub.busy = False
        sub.direct = functools.partial(_send_now, ws, self.config.write_limit)
        while True:
            await sub.wait()
            sub.busy = True
            for text in sub.take():
                await ws.send(text)
            sub.busy = False
            if sub.closed and not sub.queue:
                break
        if sub.dropped:
            await ws.close(1008, "too slow")

    async def _reject_input(self, ws: ServerConnection, what: str) -> str:
        """Wait for the peer: any message it sends is a protocol error; returns the error text."""
        msg = await ws.recv()
        if isinstance(msg, bytes):
            return f"binary frames are not accepted on {what}"
        if len(msg) > protocol.MAX_TEXT_BYTES:
            return f"message too large (limit {protocol.MAX_TEXT_BYTES} bytes)"
        try:
            m = protocol.decode(msg)
        except ProtocolError as exc:
            return str(exc)
        return f"unexpected message type {m['type']!r} on {what}"

    def _since(self, params: dict[str, str]) -> int:
        text = params.get("since", "0")
        try:
            since = int(text)
        except ValueError:
            raise ProtocolError(f"since must be an integer, got {text!r}") from None
        if since < 0:
            raise ProtocolError("since must be 0 or more")
        return since

    async def _subscribe(self, ws: ServerConnection, params: dict[str, str]) -> None:
        try:
            since = self._since(params)
        except ProtocolError as exc:
            return await self._fail(ws, str(exc))
        sid = params.get("stream")
        if sid is None:
            sid = MAIN_STREAM if self.hub.get(MAIN_STREAM) else None
            if sid is None and len(self.hub.streams) == 1:
                sid = next(iter(self.hub.streams))
        stream = self.hub.get(sid) if sid else None
        if stream is None or stream.hello is None:
            ids = ", ".join(sorted(self.hub.streams)) or "none yet"
            what = f"no stream {sid!r}" if sid else "no default stream: add ?stream=ID"
            return await self._fail(ws, f"{what} (streams: {ids})")
        sub, replay, gap = stream.subscribe(since, on_drop=self._on_drop(ws))
        if gap is not None:
            note = protocol.encode(protocol.error(
                f"history no longer holds seq {gap} to {stream.history[0][0] - 1}; replaying from "
                f"{stream.history[0][0]}"))
            replay = replay[:1] + [note] + replay[1:]
        await self._serve_subscriber(ws, sub, replay, "/ws")

    async def _serve_subscriber(self, ws: ServerConnection, sub: Subscriber, replay: list[str], what: str) -> None:
        pump = asyncio.ensure_future(self._pump(ws, sub, replay))
        reader = asyncio.ensure_future(self._reject_input(ws, what))
        try:
            done, _ = await asyncio.wait({pump, reader}, return_when=asyncio.FIRST_COMPLETED)
            if reader in done and not reader.cancelled() and reader.exception() is None:
                sub.close()
                pump.cancel()
                await self._fail(ws, reader.result())
            elif pump in done:
                if pump.exception() is None and not sub.dropped:
                    # stream over: stay open (history) until the peer goes or misbehaves
                    await self._fail(ws, await reader)
        except ConnectionClosed:
            pass
        finally:
            sub.close()
            for t in (pump, reader):
                t.cancel()
            await asyncio.gather(pump, reader, return_exceptions=True)

    async def _ingest(self, ws: ServerConnection, params: dict[str, str]) -> None:
        sid = params.get("stream", "")
        if not _STREAM_ID.match(sid):
            return await self._fail(ws, "ingest needs ?stream=ID (letters, digits, _ . : @ -; up to 64)")
        if not self.hub.reserve(sid):
            return await self._fail(ws, f"stream ID {sid!r} is in use")
        cfg = self.config
        loop = asyncio.get_running_loop()
        stream: Stream | None = None
        sub: Subscriber | None = None
        pipe: PipelineLike | None = None
        pump: asyncio.Future[None] | None = None
        failure: str | None = None
        try:
            try:
                first = await asyncio.wait_for(ws.recv(), cfg.idle_timeout)
            except asyncio.TimeoutError:
                raise ProtocolError(f"no start message within {cfg.idle_timeout:g} s") from None
            if isinstance(first, bytes):
                raise ProtocolError("audio frame before the start message")
            start = protocol.parse_client(first)
            if not isinstance(start, protocol.Start):
                raise ProtocolError("the first message must be start")
            try:
                pipe = await loop.run_in_executor(self.pool, self._make_pipeline, start.sample_rate, start.channels)
            except UsageError as exc:
                raise ProtocolError(str(exc)) from None
            hello = dict(pipe.hello(source=f"ingest:{sid}"), encoding=start.encoding,
                         input_rate=start.sample_rate, input_channels=start.channels)
            stream = self.hub.create(sid, hello, kind="ingest")
            sub, replay, _ = stream.subscribe(0, on_drop=self._on_drop(ws))
            pump = asyncio.ensure_future(self._pump(ws, sub, replay))
            feed = _Feeder(pipe, stream, self.pool, start)
            last_rx = [loop.time()]
            reader = asyncio.ensure_future(self._read_audio(ws, start, feed, last_rx))
            try:
                while not reader.done():
                    await asyncio.wait({reader, pump, feed.task}, timeout=min(1.0, cfg.idle_timeout),
                                       return_when=asyncio.FIRST_COMPLETED)
                    if reader.done():
                        break
                    if feed.task.done():
                        feed.task.result()  # raises the pipeline's error
                    if pump.done():  # our sender died (dropped, or the peer went)
                        return
                    if loop.time() - last_rx[0] > cfg.idle_timeout:
                        raise ProtocolError(f"no audio for {cfg.idle_timeout:g} s: stream closed")
                reader.result()
            finally:
                reader.cancel()
                await feed.drain()  # frames already read are analysed; never finish() beside a feed()
        except ProtocolError as exc:
            failure = str(exc)
        except ConnectionClosed:
            pass
        except EmostreamError as exc:
            failure = f"pipeline failed: {exc}"
        finally:
            if stream is None:
                self.hub.release(sid)
            else:
                if failure and sub is not None and not sub.closed:
                    sub.push(protocol.encode(protocol.error(failure)))
                try:
                    if pipe is not None:
                        stream.publish_many(await loop.run_in_executor(self.pool, pipe.finish))
                except Exception as exc:  # never leave a stream open
                    log.error("finishing stream %s failed: %s", sid, exc)
                stream.end()
            if pump is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(pump), cfg.drop_grace + 5)
                except (asyncio.TimeoutError, ConnectionClosed, Exception):
                    pump.cancel()
        if failure and stream is None:
            return await self._fail(ws, failure)
        try:
            await ws.close(1008 if failure else 1000, (failure or "end of stream")[:120])
        except ConnectionClosed:
            pass

    async def _read_audio(self, ws: ServerConnection, start: protocol.Start, feed: "_Feeder",
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
                    await feed.put(msg)
                continue
            m = protocol.parse_client(msg)
            if isinstance(m, protocol.Stop):
                return
            raise ProtocolError("start sent twice")

    # -- POST /label -----------------------------------------------------------------------

    async def handle_http(self, method: str, target: str, headers: Headers, body: bytes) -> Response:
        """Answer a request the websockets library does not parse (POST /label and the like)."""
        denied = self.check_request(method, target, headers)
        if denied is not None:
            return denied
        route = urlsplit(target).path
        if route != "/label":
            if route in ("/", "/ws", "/ingest", "/streams"):
                return _error_response(405, f"{method} not allowed on {route}")
            return _error_response(404, f"not found: {route}")
        if method != "POST":
            return _error_response(405, f"{method} not allowed on /label (use POST)")
        try:
            data, name = _upload_payload(headers, body, urlsplit(target).query)
        except InputError as exc:
            return _error_response(400, str(exc))
        if not data:
            return _error_response(400, "empty upload: send an audio file")
        if self.labeler is None:
            return _error_response(503, "this server cannot label uploads (no model)")
        assert self._label_sem is not None
        async with self._label_sem:
            return await asyncio.to_thread(self._label_bytes, data, name)

    def _label_bytes(self, data: bytes, name: str) -> Response:
        suffix = _suffix_for(name, data)
        fd, path = tempfile.mkstemp(prefix="emostream-upload-", suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            assert self.labeler is not None
            result = self.labeler(path, name)
            return _json_response(200, result)
        except InputError as exc:
            return _error_response(415, str(exc).replace(path, name))
        except EmostreamError as exc:
            return _error_response(500, str(exc).replace(path, name))
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass


class _Feeder:
    """Decodes and feeds one ingest stream in the thread pool, one call at a time, in order.

    Frames (raw payloads, sizes already checked) that arrive while a call runs are joined into the
    next call, so a busy server makes fewer, larger calls instead of falling behind; past
    ``max_pending`` frames the reader waits (and TCP pushes back on the sender).
    """

    def __init__(self, pipe: PipelineLike, stream: Stream, pool: concurrent.futures.Executor,
                 start: protocol.Start, max_pending: int = 64):
        self.pipe, self.stream, self.pool = pipe, stream, pool
        self.encoding, self.channels = start.encoding, start.channels
        self.pending: list[Any] = []
        self.max_pending = max_pending
        self.have = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.closing = False
        self.task = asyncio.ensure_future(self._run())

    async def put(self, payload: bytes) -> None:
        self.pending.append(payload)
        self.have.set()
        if len(self.pending) >= self.max_pending:
            self.room.clear()
            await self.room.wait()

    def _feed(self, payload: bytes) -> list[dict[str, Any]]:
        return self.pipe.feed(decode_pcm(payload, self.encoding, self.channels))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.pending:
                if self.closing:
                    return
                self.have.clear()
                await self.have.wait()
                continue
            blocks, self.pending = self.pending, []
            self.room.set()
            payload = blocks[0] if len(blocks) == 1 else b"".join(blocks)
            events = await loop.run_in_executor(self.pool, self._feed, payload)
            self.stream.publish_many(events)

    async def drain(self) -> None:
        """Analyse every frame put so far, then stop; raises the pipeline's error, if any."""
        self.closing = True
        self.have.set()
        self.room.set()
        await asyncio.shield(self.task)


def _send_now(ws: ServerConnection, limit: int, text: str) -> bool:
    """Write a frame without waiting, when the connection is open and its buffer is small."""
    transport = ws.transport
    if (ws.protocol.state is not OPEN or getattr(ws, "send_in_progress", None) is not None or transport is None
            or transport.is_closing() or transport.get_write_buffer_size() > limit):
        return False
    broadcast([ws], text)
    return True


def _abort_if_open(ws: ServerConnection) -> None:
    if ws.transport is not None and not ws.transport.is_closing():
        ws.transport.abort()
