"""Who may talk to the server: the token and the browser origin, checked on every request."""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from websockets.http11 import Response

from streamer.server.config import ServerConfig
from streamer.server.responses import error_response

__all__ = ["Access", "redact"]


class Access:
    """Token and Origin checks for any request (HTTP or WebSocket, any route).

    Args:
        config: the token (None: no token needed) and the extra allowed origins.
    """

    def __init__(self, config: ServerConfig):
        self.token = config.token
        self.origins = list(config.origins)

    def check(self, method: str, target: str, headers: Any) -> Response | None:
        """An error response (401, 403) or None when the request is allowed."""
        if self.token:
            query = dict(parse_qsl(urlsplit(target).query))
            given = query.get("token") or ""
            auth = headers.get("Authorization") or ""
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
                return error_response(401, "missing or wrong token (use ?token= or Authorization: Bearer)")
        origin = headers.get("Origin")
        if origin is not None and not self.origin_ok(origin, headers.get("Host") or ""):
            return error_response(403, f"origin {origin!r} not allowed")
        return None

    def origin_ok(self, origin: str, host: str) -> bool:
        """A browser origin is allowed when listed or when it is the server's own address."""
        if origin in self.origins:
            return True
        try:
            netloc = urlsplit(origin).netloc
        except ValueError:
            return False
        return bool(netloc) and netloc.lower() == host.lower()


def redact(target: str) -> str:
    """A request target fit for a log: without its ``token`` parameter."""
    url = urlsplit(target)
    if "token" not in url.query:
        return target
    query = urlencode([(k, v) for k, v in parse_qsl(url.query, keep_blank_values=True) if k != "token"])
    return url.path + ("?" + query if query else "")
