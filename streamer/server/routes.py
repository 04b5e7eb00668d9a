"""What each request gets: the page and its files, ``/streams``, ``/health``, ``/metrics``, the
WebSocket endpoints' admission, ``POST /label``; every request checked by :class:`Access` first."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from streamer.server.auth import Access, redact
from streamer.server.config import ServerConfig
from streamer.server.hub import Hub
from streamer.server.logs import access
from streamer.server.metrics import CONTENT_TYPE, Metrics
from streamer.server.responses import error_response, json_response, response

__all__ = ["Router", "WS_ROUTES", "ROUTES", "client_of"]

WS_ROUTES = ("/ws", "/ingest")
ROUTES = ("/", "/ws", "/ingest", "/streams", "/label", "/render", "/health", "/metrics")
_STATIC = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
           ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
           ".ico": "image/x-icon", ".json": "application/json"}

Upload = Callable[[str, Headers, Any], Awaitable[Response]]  # body: connection.Body
Ready = Callable[[], "str | None"]  # why the server cannot serve now, or None


def client_of(conn: Any) -> str:
    """``host:port`` of a connection's peer (``-`` when gone)."""
    peer = getattr(conn, "remote_address", None)
    if not peer:
        return "-"
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class Router:
    """Answers HTTP requests; admits WebSocket upgrades on their endpoints.

    Args:
        config: the page's directory.
        auth: token and origin checks.
        hub: streams for ``/streams`` and ``/health``.
        metrics: rendered at ``/metrics``; counts requests.
        upload: answers ``POST /label`` (target, headers, body).
        ready: None when the server can serve, else the reason it cannot (``/health`` answers 503).
    """

    def __init__(self, config: ServerConfig, auth: Access, hub: Hub, metrics: Metrics, upload: Upload,
                 ready: Ready):
        self.web_dir = Path(config.web_dir)
        self.auth, self.hub, self.metrics, self.upload, self.ready = auth, hub, metrics, upload, ready
        self.started = time.time()

    # websockets: GET requests, upgrades or not

    async def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """The answer to a GET, or None to go on with a WebSocket handshake."""
        route = urlsplit(request.path).path
        self.metrics.request(route if route in ROUTES else "other")
        denied = self.auth.check(request.method, request.path, request.headers)
        if denied is not None:
            return denied
        upgrade = "websocket" in (request.headers.get("Upgrade") or "").lower()
        if route in WS_ROUTES:
            return None if upgrade else error_response(426, f"{route} is a WebSocket endpoint")
        if upgrade:
            return error_response(404, f"no WebSocket endpoint at {route}")
        return await self.get(request.path)

    def process_response(self, connection: ServerConnection, request: Request, resp: Response) -> None:
        """Log every answer but a successful upgrade (that one is logged when it closes)."""
        if resp.status_code != 101:
            access(client_of(connection), request.method, redact(request.path),
                   time.monotonic() - getattr(connection, "opened", time.monotonic()), status=resp.status_code)

    async def get(self, target: str) -> Response:
        """A plain GET."""
        url = urlsplit(target)
        route = url.path
        if route == "/streams":
            everything = (parse_qs(url.query).get("all") or ["0"])[-1] not in ("0", "", "false")
            return json_response(200, await self.hub.list_all(include_ended=everything))
        if route == "/health":
            return await self.health()
        if route == "/metrics":
            return response(200, self.metrics.render(), CONTENT_TYPE)
        if route == "/label":
            return error_response(405, "POST an audio file to /label")
        if route == "/colors.json":  # the page's label colours: the PNG plot's, the one definition
            from streamer.plot import LABEL_COLOURS, SILENCE_COLOUR
            return json_response(200, {"colors": LABEL_COLOURS, "silence": SILENCE_COLOUR})
        return self.static(route)

    async def health(self) -> Response:
        """200 ``{"status": "ok", "streams": N, ...}``, or 503 ``{"status": "unavailable", "reason": ...}``."""
        reason = self.ready()
        try:
            backend = await self.hub.backend.health()
        except Exception as exc:  # a backend that cannot even say
            backend = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        if reason is None and not backend.get("ok"):
            reason = f"{self.hub.backend.name} backend: {backend.get('error') or 'not ok'}"
        body = {"status": "ok" if reason is None else "unavailable", "streams": self.hub.live_count(),
                "subscribers": self.hub.subscriber_count(), "uptime_s": round(time.time() - self.started, 1),
                "backend": {k: v for k, v in backend.items() if k != "ok"} | {"ok": bool(backend.get("ok"))}}
        if reason is not None:
            body["reason"] = reason
        return json_response(200 if reason is None else 503, body)

    def static(self, route: str) -> Response:
        """The page and its files (one directory, no subdirectories, known types only)."""
        name = "index.html" if route in ("/", "/index.html") else route.lstrip("/")
        if "/" in name or "\\" in name or name.startswith(".") or Path(name).suffix not in _STATIC:
            return error_response(404, f"not found: {route}")
        path = self.web_dir / name
        try:
            body = path.read_bytes()
        except OSError:
            return error_response(404, f"not found: {route}")
        return response(200, body, _STATIC[path.suffix])

    # requests that websockets does not parse (POST and the like)

    async def handle_http(self, method: str, target: str, headers: Headers, body: Any) -> Response:
        """Answer a non-GET request (``POST /label``; anything else is 404 or 405)."""
        route = urlsplit(target).path
        self.metrics.request(route if route in ROUTES else "other")
        denied = self.auth.check(method, target, headers)
        if denied is not None:
            return denied
        if route not in ("/label", "/render"):  # /render: the page's downloads (uploads.py)
            if route in ROUTES:
                return error_response(405, f"{method} not allowed on {route}")
            return error_response(404, f"not found: {route}")
        if method != "POST":
            return error_response(405, f"{method} not allowed on {route} (use POST)")
        return await self.upload(target, headers, body)

    def answered(self, conn: Any, method: str, target: str, status: int, seconds: float) -> None:
        """Log a non-GET request once answered."""
        access(client_of(conn), method, redact(target), seconds, status=status)
