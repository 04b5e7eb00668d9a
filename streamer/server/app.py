"""The server's life cycle: bind, route each connection to its part, start sources, close."""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import functools
import threading
import time
from typing import Any, Coroutine
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import OPEN

from streamer import events
from streamer.errors import EmostreamError, UsageError
from streamer.server.auth import Access, check_token, redact
from streamer.server.budget import MemoryGuard
from streamer.server.config import (MAIN_STREAM, Labeler, PipelineFactory, PipelineLike, ServerConfig,
                                    SourceRunner, is_loopback)
from streamer.server.connection import HttpSide, SniffingConnection
from streamer.server.hub import Hub, HubBackend
from streamer.server.ingest import IngestSession
from streamer.server.logs import access
from streamer.server.memory import MemoryBackend
from streamer.server.metrics import Metrics
from streamer.server.routes import Router, client_of
from streamer.server.runner import run_source
from streamer.server.subscribe import subscribe
from streamer.server.uploads import Uploads

__all__ = ["EmoServer"]


class EmoServer:
    """The emostream server: one hub of streams behind one port.

    Args:
        config: settings.
        pipeline_factory: makes a pipeline for (sample_rate, channels); default from the model.
        labeler: labels an uploaded file for ``POST /label``; default from the model.
        runner: drives a pull source through a pipeline (default ``streamer.pipeline.run``).
        backend: the hub's backend (default: in memory, this process only).
    """

    def __init__(self, config: ServerConfig | None = None, *, pipeline_factory: PipelineFactory | None = None,
                 labeler: Labeler | None = None, runner: SourceRunner | None = None,
                 backend: HubBackend | None = None):
        self.config = cfg = config or ServerConfig()
        self.pipeline_factory = pipeline_factory
        self.labeler = labeler
        self.runner = runner
        self.metrics = Metrics()
        if backend is None:  # history bounded in bytes too (the memory budget, README "Limits")
            backend = MemoryBackend(history=cfg.history, history_bytes=cfg.history_bytes,
                                    total_bytes=cfg.history_total_bytes)
        self.hub = Hub(history=cfg.history, max_queue=cfg.max_queue, record=cfg.record, backend=backend,
                       observer=self.metrics)
        self.metrics.bind(self.hub)
        self.pool = concurrent.futures.ThreadPoolExecutor(max(1, cfg.workers), thread_name_prefix="emostream-ingest")
        self.access = Access(cfg)
        self.guard = MemoryGuard(cfg.memory_budget)
        self.uploads = Uploads(labeler, cfg.label_jobs, on_done=self.metrics.upload, queue=cfg.upload_queue,
                               max_seconds=cfg.max_upload_seconds, guard=self.guard)
        self.ingest = IngestSession(self.hub, self.pool, self._make_pipeline, cfg, on_bytes=self.metrics.ingest_bytes,
                                    guard=self.guard)
        self.router = Router(cfg, self.access, self.hub, self.metrics, self.uploads.handle, self._not_ready)
        self.http = HttpSide(check=self.access.check, handle=self.router.handle_http, answered=self.router.answered,
                             max_upload=cfg.max_upload, open_timeout=cfg.open_timeout, idle_timeout=cfg.idle_timeout,
                             body_timeout=cfg.upload_timeout, admit=self.uploads.admit)
        self._server: Server | None = None
        self._stops: list[threading.Event] = []
        self._tasks: set[asyncio.Task[Any]] = set()
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
        check_token(cfg.token, cfg.host)
        try:
            self._server = await serve(
                self._handler, cfg.host, cfg.port,
                process_request=self.router.process_request,
                process_response=self.router.process_response,
                create_connection=functools.partial(SniffingConnection, side=self.http),
                max_size=max(4 << 20, 2 * cfg.max_message),
                # frames read ahead of the handler per connection: with the ingest budget, what bounds
                # the memory a fast sender can make the server hold (16 by default: 64 MiB at max_size)
                max_queue=2,
                open_timeout=None,  # SniffingConnection applies its own (the POST path needs longer)
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

    def _not_ready(self) -> str | None:
        if self._closed:
            return "shutting down"
        if self._server is None:
            return "not started"
        return None

    async def close(self) -> None:
        """Stop sources, close every connection, wait for handlers; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for stop in self._stops:
            stop.set()
        for t in list(self._tasks):
            t.cancel()
        for conn in list(self.http.open):  # uploads being read or labelled
            conn.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.hub.aclose()
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> "EmoServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a coroutine as one of the server's tasks: cancelled and awaited by :meth:`close`."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- sources ---------------------------------------------------------------------------

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
        stream = self.hub.create(stream_id, events.Hello.of(pipe, source=source.uri), kind="source")
        stop = threading.Event()
        self._stops.append(stop)
        return self.spawn(run_source(source, pipe, stream, realtime=realtime, stop=stop, runner=self.runner,
                                     health_s=self.config.health_s))

    # -- WebSocket connections -------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        url = urlsplit(ws.request.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        code: int | None = None
        try:
            if url.path == "/ingest":
                await self.ingest.serve(ws, params)
            else:
                await subscribe(ws, params, self.hub, self.config)
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            code = 1001  # the server is closing
            raise
        finally:
            if code is None:
                code = _close_code(ws)
            access(client_of(ws), "GET", redact(ws.request.path), time.monotonic() - getattr(ws, "opened", 0.0),
                   close_code=code)


def _close_code(ws: ServerConnection) -> int:
    """The code of the close this side sent (or echoed), 1006 for a connection that just dropped,
    1000 for one still open (websockets closes it with 1000 when the handler returns)."""
    frame = ws.protocol.close_sent or ws.protocol.close_rcvd
    if frame is not None:
        return int(frame.code)
    return 1000 if ws.protocol.state is OPEN else 1006
