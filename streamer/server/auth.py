"""Who may talk to the server, and with what: checked on every request before anything else.

* the request itself: no NUL or control characters in the target; one value at most for the
  headers the server reads (two ``Content-Length`` or ``Origin`` headers are a 400, not a guess);
* ``Host``: without a token the server answers only to the names it is known by (loopback names,
  the bound address, ``--allowed-host``), so a DNS-rebinding page (``Host: evil.example``) is
  refused even though its requests reach 127.0.0.1;
* the token (``?token=`` or ``Authorization: Bearer``), when the server has one;
* ``Origin``: a browser must come from the server's own address or a listed origin.
"""

from __future__ import annotations

import hmac
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from websockets.http11 import Response

from streamer import protocol
from streamer.errors import UsageError
from streamer.server.config import ServerConfig, is_loopback
from streamer.server.responses import error_response

__all__ = ["Access", "redact", "check_token", "host_name", "SINGLE_HEADERS", "MIN_TOKEN"]

# Headers the server acts on: a request that repeats one is ambiguous (request smuggling, origin
# confusion), so it is refused rather than read one way here and another way by a proxy.
SINGLE_HEADERS = ("Host", "Content-Length", "Content-Type", "Transfer-Encoding", "Origin", "Authorization",
                  "Expect", "Upgrade", "Sec-WebSocket-Key", "Sec-WebSocket-Version")
MIN_TOKEN = 16  # characters of a token that guards a server reachable beyond this machine
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WILDCARD = ("", "0.0.0.0", "::", "[::]")


def check_token(token: str | None, host: str) -> None:
    """Refuse a token that guards nothing: blank or with spaces anywhere, or short beyond loopback.

    Raises:
        UsageError: the token is blank, holds whitespace or control characters, or is shorter than
            :data:`MIN_TOKEN` characters on a non-loopback binding.
    """
    if token is None:
        return
    if not token.strip() or _CONTROL.search(token) or any(c.isspace() for c in token):
        raise UsageError("--token must not be blank or hold spaces or control characters")
    if not is_loopback(host) and len(token) < MIN_TOKEN:
        raise UsageError(f"--token must be at least {MIN_TOKEN} characters to bind to {host} "
                         "(beyond this machine); e.g. python -c 'import secrets; print(secrets.token_urlsafe())'")


def host_name(host_header: str) -> str:
    """The name in a ``Host`` header: port, brackets, case and a final dot removed."""
    h = host_header.strip().lower()
    if h.startswith("["):
        h = h[1:].partition("]")[0]
    elif h.count(":") == 1:
        h = h.partition(":")[0]
    return h.rstrip(".")


class Access:
    """Token and Origin checks for any request (HTTP or WebSocket, any route).

    Args:
        config: the token (None: no token needed) and the extra allowed origins.
    """

    def __init__(self, config: ServerConfig):
        self.token = config.token
        self.origins = list(config.origins)
        extra = [host_name(h) for h in getattr(config, "allowed_hosts", None) or []]
        self.any_host = "*" in extra
        self.hosts = set(extra) | ({host_name(config.host)} if config.host not in _WILDCARD else set())
        # with a token, a rebinding page cannot authenticate anyway: Host is checked only when listed
        self.check_host = not self.token or bool(extra)

    def host_ok(self, host: str) -> bool:
        """Whether a ``Host`` header names this server (loopback names always do)."""
        name = host_name(host)
        return self.any_host or is_loopback(name) or name in self.hosts

    def check(self, method: str, target: str, headers: Any) -> Response | None:
        """An error response (400, 401, 403, 421) or None when the request is allowed."""
        if _CONTROL.search(target) or not target.isascii():
            return error_response(400, "bad request target (control or non-ASCII characters: "
                                       "percent-encode them)")
        for name in SINGLE_HEADERS:
            if len(headers.get_all(name)) > 1:
                return error_response(400, f"duplicate {name} header")
        host = headers.get("Host")
        if self.check_host and host is not None and not self.host_ok(host):
            return error_response(403, f"host {protocol.quote(host)} is not served here "
                                       "(serve --allowed-host NAME to add a name)")
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
            return error_response(403, f"origin {protocol.quote(origin)} not allowed")
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
