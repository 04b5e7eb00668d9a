"""HTTP beside the WebSockets on one port: responses, uploads, and the connection that sniffs a request.

The ``websockets`` library parses only GET requests. :class:`SniffingConnection` reads each
connection's request head first: a ``GET`` goes on to websockets unchanged; anything else (``POST
/label``) is read here by a small HTTP/1.1 reader (Content-Length bodies, ``Expect: 100-continue``,
head and body timeouts, a size limit) and answered by the app's ``handle_http``.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Response

from streamer.errors import InputError

if TYPE_CHECKING:
    from streamer.server import EmoServer

__all__ = ["MAX_HEAD", "json_response", "error_response", "response", "serialize", "suffix_for",
           "upload_payload", "SniffingConnection"]

MAX_HEAD = 16 * 1024

log = logging.getLogger("emostream.server")


def json_response(status: int, obj: Any) -> Response:
    """A JSON response."""
    return response(status, (json.dumps(obj) + "\n").encode(), "application/json")


def error_response(status: int, message: str) -> Response:
    """A JSON error: ``{"error": message, "status": status}``."""
    return json_response(status, {"error": message, "status": status})


def response(status: int, body: bytes, content_type: str) -> Response:
    """A complete response that closes the connection and is never cached or sniffed."""
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                       ("Connection", "close")])
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def serialize(resp: Response) -> bytes:
    """The response's bytes on the wire."""
    head = f"HTTP/1.1 {resp.status_code} {resp.reason_phrase}\r\n".encode()
    return head + resp.headers.serialize() + bytes(resp.body)


_MAGIC = [(b"RIFF", ".wav"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"ID3", ".mp3"), (b"FORM", ".aiff")]


def suffix_for(name: str, data: bytes) -> str:
    """A file suffix for an upload: its name's, else one read off its first bytes, else none."""
    ext = Path(name).suffix.lower()
    if re.fullmatch(r"\.[a-z0-9]{1,6}", ext):
        return ext
    for magic, suffix in _MAGIC:
        if data.startswith(magic):
            return suffix
    if data[4:8] == b"ftyp":
        return ".m4a"
    return ""


def upload_payload(headers: Headers, body: bytes, query: str) -> tuple[bytes, str]:
    """The uploaded file's bytes and name from a raw or multipart/form-data body."""
    ctype = headers.get("Content-Type") or ""
    name = (parse_qs(query).get("filename") or ["upload"])[-1]
    if not ctype.lower().startswith("multipart/form-data"):
        return body, os.path.basename(name) or "upload"
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    if not m:
        raise InputError("multipart upload without a boundary")
    delim = b"--" + m.group(1).encode("latin-1")
    fallback: tuple[bytes, str] | None = None
    for part in body.split(delim)[1:]:
        if part.startswith(b"--"):
            break
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        if content.endswith(b"\r\n"):
            content = content[:-2]
        disp = re.search(rb'(?i)content-disposition:[^\r\n]*', head)
        dtext = disp.group(0).decode("latin-1") if disp else ""
        fname = re.search(r'filename="([^"]*)"', dtext)
        if fname:
            return content, os.path.basename(fname.group(1)) or "upload"
        if fallback is None and re.search(r'name="(file|audio)"', dtext):
            fallback = (content, "upload")
    if fallback is not None:
        return fallback
    raise InputError("multipart upload holds no file part")


class SniffingConnection(ServerConnection):
    """A websockets connection that first sniffs the request method.

    ``GET`` goes to websockets unchanged; anything else (``POST /label``) is read and answered
    here, with a body limit and timeouts, and the connection is then closed.
    """

    def __init__(self, *args: Any, app: "EmoServer", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.app = app
        self._mode: str | None = None           # None (sniffing), "ws" or "http"
        self._buf = bytearray()
        self._decided: asyncio.Future[None] = self.loop.create_future()
        self._more = asyncio.Event()
        self._eof = False

    # asyncio.Protocol callbacks

    def data_received(self, data: bytes) -> None:
        if self._mode == "ws":
            return super().data_received(data)
        self._buf += data
        self._more.set()
        if self._mode == "http":
            if len(self._buf) > self.app.config.max_upload + MAX_HEAD + 65536:
                self.transport.pause_reading()  # the reader answers 413 and closes
            return
        sp = self._buf.find(b" ")
        if sp < 0 and len(self._buf) < 8:
            return
        if self._buf[:sp] == b"GET":
            self._mode = "ws"
            buf, self._buf = bytes(self._buf), bytearray()
            self._decide()
            super().data_received(buf)
        else:
            self._mode = "http"
            self._decide()

    def eof_received(self) -> None:
        if self._mode == "ws":
            return super().eof_received()
        self._eof = True
        self._more.set()
        self._decide()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._more.set()
        self._decide()
        super().connection_lost(exc)

    def _decide(self) -> None:
        if not self._decided.done():
            self._decided.set_result(None)

    # websockets calls this first

    async def handshake(self, *args: Any, **kwargs: Any) -> None:
        timeout = self.app.config.open_timeout
        try:
            await asyncio.wait_for(asyncio.shield(self._decided), timeout)
        except asyncio.TimeoutError:
            self.transport.abort()
            return
        if self._mode == "ws":
            await asyncio.wait_for(super().handshake(*args, **kwargs), timeout)
            return
        if self._mode == "http":
            self.app._http_conns.add(self)
            task = asyncio.ensure_future(self._serve_http())
            try:
                await asyncio.wait({task, self.connection_lost_waiter}, return_when=asyncio.FIRST_COMPLETED)
                if not task.done():  # the peer went away (or the server is closing): stop waiting
                    task.cancel()
                    return
                resp = task.result()
            except asyncio.TimeoutError:
                resp = error_response(408, "request timed out")
            except asyncio.CancelledError:
                task.cancel()
                self.transport.abort()
                raise
            except Exception as exc:
                log.exception("HTTP request failed")
                resp = error_response(500, f"internal error: {type(exc).__name__}")
            finally:
                self.app._http_conns.discard(self)
            if resp is not None and not self.transport.is_closing():
                self.transport.write(serialize(resp))
                self.transport.close()  # after the response is flushed
            await self.connection_lost_waiter  # wait for the flush; then websockets drops us
        # peer went away before a request: nothing to answer

    async def _read_more(self, timeout: float) -> None:
        self._more.clear()
        if self._eof:
            raise ConnectionResetError("peer closed")
        await asyncio.wait_for(self._more.wait(), timeout)

    async def _serve_http(self) -> Response | None:
        cfg = self.app.config
        loop = self.loop
        deadline = loop.time() + cfg.open_timeout
        while (end := self._buf.find(b"\r\n\r\n")) < 0:
            if len(self._buf) > MAX_HEAD:
                return error_response(431, "request head too large")
            try:
                await self._read_more(max(0.0, deadline - loop.time()))
            except ConnectionResetError:
                return None
        head = bytes(self._buf[:end]).decode("latin-1")
        del self._buf[: end + 4]
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return error_response(400, "malformed request line")
        method, target, _ = parts
        headers = Headers()
        for line in lines[1:]:
            k, sep, v = line.partition(":")
            if not sep or not k.strip():
                return error_response(400, "malformed header")
            headers[k.strip()] = v.strip()
        denied = self.app.check_request(method, target, headers)
        if denied is not None:
            return denied
        if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
            return error_response(411, "send a Content-Length (chunked uploads are not supported)")
        try:
            length = int(headers.get("Content-Length") or "0")
        except ValueError:
            return error_response(400, "bad Content-Length")
        if length < 0:
            return error_response(400, "bad Content-Length")
        if length > cfg.max_upload:
            return error_response(413, f"upload of {length} bytes is larger than the limit "
                                        f"({cfg.max_upload // (1 << 20)} MB)")
        if method == "POST" and "100-continue" in (headers.get("Expect") or "").lower():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        while len(self._buf) < length:
            self.transport.resume_reading()
            try:
                await self._read_more(cfg.idle_timeout)
            except ConnectionResetError:
                return None
        body = bytes(self._buf[:length])
        self._buf.clear()
        return await self.app.handle_http(method, target, headers, body)
