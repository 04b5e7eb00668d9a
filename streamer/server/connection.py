"""The connection that sniffs each request: GET goes to websockets, anything else is read here.

The ``websockets`` library parses only GET requests. :class:`SniffingConnection` reads each
connection's first bytes: a ``GET`` goes on to websockets unchanged; anything else (``POST
/label``) is read by a small HTTP/1.1 reader (Content-Length bodies, ``Expect: 100-continue``,
head and body timeouts, a size limit) and answered by the ``handle`` callable it was given. This
module knows nothing of the application: it gets callables and limits (:class:`HttpSide`).

Bodies are bounded in time and memory: the head must arrive within ``open_timeout``, the body may
not stall for ``idle_timeout`` nor take longer than ``body_timeout`` in all (one byte every few
seconds is not an upload); a body larger than :data:`SPOOL_ABOVE` goes to a temporary file as it
arrives (:class:`Body`), so eight 45 MB uploads cost disk, not memory. A ``GET`` whose request
line is not clean ASCII is answered 400 here (websockets would drop it without a word).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, BinaryIO, Callable

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHeaderValue
from websockets.http11 import Response

from streamer.server.responses import error_response, serialize

__all__ = ["MAX_HEAD", "SPOOL_ABOVE", "Body", "HttpSide", "SniffingConnection", "parse_head"]

MAX_HEAD = 16 * 1024
SPOOL_ABOVE = 256 * 1024  # larger bodies are written to a temporary file as they arrive
_DIRTY_LINE = re.compile(rb"[^\x20-\x7e]")  # a request line is printable ASCII, nothing else
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # an HTTP token (RFC 9110 5.6.2)


def parse_head(raw: bytes) -> "tuple[str, str, Headers] | Response":
    """A request head (without its blank line) as (method, target, headers), or a 400 response.

    The request line is printable ASCII with a token method and an HTTP/1.x version; every header
    line is ``token: value`` with no control characters in the value.
    """
    eol = raw.find(b"\r\n")
    if _DIRTY_LINE.search(raw, 0, len(raw) if eol < 0 else eol):
        return error_response(400, "bad request line (control or non-ASCII characters: percent-encode them)")
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not _TOKEN.fullmatch(parts[0]):
        return error_response(400, "malformed request line")
    headers = Headers()
    for line in lines[1:]:
        k, sep, v = line.partition(":")
        if not sep or not _TOKEN.fullmatch(k.strip()):
            return error_response(400, "malformed header")
        try:
            headers[k.strip()] = v.strip()
        except InvalidHeaderValue:  # control characters in a value
            return error_response(400, "malformed header")
    return parts[0], parts[1], headers


class Body:
    """A request body: in memory when small, else in a temporary file that :meth:`close` removes.

    Attributes:
        size: bytes.
        path: the temporary file (None for a body held in memory).
    """

    def __init__(self, data: bytes = b"", path: str | None = None, size: int | None = None):
        self._data = data
        self.path = path
        self.size = len(data) if size is None else size

    def read(self) -> bytes:
        """The whole body (for small bodies such as JSON; a spooled one is read from disk)."""
        if self.path is None:
            return self._data
        with open(self.path, "rb") as fh:
            return fh.read()

    def open(self) -> BinaryIO:
        """A binary file object positioned at the start of the body."""
        return open(self.path, "rb") if self.path is not None else io.BytesIO(self._data)

    def detach(self) -> str:
        """The body as a temporary file that the caller now owns (and removes)."""
        if self.path is None:
            fd, path = tempfile.mkstemp(prefix="emostream-upload-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(self._data)
            return path
        path, self.path = self.path, None
        self._data = b""
        return path

    def close(self) -> None:
        """Remove the temporary file, if any; safe to call twice."""
        if self.path is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            self.path = None

    def __len__(self) -> int:
        return self.size

log = logging.getLogger("emostream.server")

Check = Callable[[str, str, Headers], "Response | None"]
Handle = Callable[[str, str, Headers, Body], Awaitable[Response]]
Admit = Callable[[str, str], "Response | None"]  # (method, target): refuse before the body is read
Answered = Callable[["SniffingConnection", str, str, int, float], None]  # (conn, method, target, status, seconds)


@dataclass
class HttpSide:
    """What a :class:`SniffingConnection` needs to answer a non-GET request.

    Attributes:
        check: token/origin checks on the head, before the body is read: an error response or None.
        handle: answers (method, target, headers, body).
        answered: called once a response is written (the access log).
        max_upload: largest body accepted (bytes).
        open_timeout: seconds to send the request head (and to decide GET or not).
        idle_timeout: seconds the body may stall.
        body_timeout: seconds the whole body may take (a total deadline, against slow senders).
        admit: asked after the head, before the body is read: an error response (e.g. 503 when
            the upload queue is full) or None.
        open: the connections reading or answering a request now (the server aborts them on close).
    """

    check: Check
    handle: Handle
    answered: Answered | None = None
    max_upload: int = 50 << 20
    open_timeout: float = 10.0
    idle_timeout: float = 30.0
    body_timeout: float = 300.0
    admit: Admit | None = None
    open: set["SniffingConnection"] = field(default_factory=set)


class SniffingConnection(ServerConnection):
    """A websockets connection that first sniffs the request method.

    ``GET`` goes to websockets unchanged; anything else is read and answered here, with a body
    limit and timeouts, and the connection is then closed.
    """

    def __init__(self, *args: Any, side: HttpSide, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.side = side
        self.opened = time.monotonic()
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
            if len(self._buf) > (1 << 20):
                self.transport.pause_reading()  # the reader drains the buffer (to disk) and resumes
            return
        sp = self._buf.find(b" ")
        if sp < 0 and len(self._buf) < 8:
            return
        if self._buf[:sp] == b"GET":
            end = self._buf.find(b"\r\n\r\n")
            if end < 0 and len(self._buf) < MAX_HEAD:
                return  # the whole head first
            # a head websockets would drop without a word is answered (400) by the reader below
            if end < 0 or isinstance(parse_head(bytes(self._buf[:end])), Response):
                self._mode = "http"
                self._decide()
                return
            self._mode = "ws"
            buf, self._buf = bytes(self._buf), bytearray()
            self._decide()
            super().data_received(buf)
        else:
            self._mode = "http"
            self._decide()

    def eof_received(self) -> bool | None:
        if self._mode == "ws":
            return super().eof_received()
        self._eof = True
        self._more.set()
        self._decide()
        # a client that half-closes after its request still gets the answer: keep our side open
        # (True); before a request there is nothing to answer and the transport closes (None)
        return True if self._mode == "http" else None

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
        timeout = self.side.open_timeout
        try:
            await asyncio.wait_for(asyncio.shield(self._decided), timeout)
        except asyncio.TimeoutError:
            self.transport.abort()
            return
        if self._mode == "ws":
            await asyncio.wait_for(super().handshake(*args, **kwargs), timeout)
            return
        if self._mode == "http":
            await self._answer()
        # peer went away before a request: nothing to answer

    async def _answer(self) -> None:
        self.side.open.add(self)
        self._request: tuple[str, str] = ("-", "-")
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
            self.side.open.discard(self)
        if resp is not None and not self.transport.is_closing():
            self.transport.write(serialize(resp))
            self.transport.close()  # after the response is flushed
            if self.side.answered is not None:
                self.side.answered(self, *self._request, resp.status_code, time.monotonic() - self.opened)
        elif not self.transport.is_closing():  # the peer stopped sending mid-request: nothing to answer
            self.transport.close()
        await self.connection_lost_waiter  # wait for the flush; then websockets drops us

    async def _read_more(self, timeout: float) -> None:
        self._more.clear()
        if self._eof:
            raise ConnectionResetError("peer closed")
        await asyncio.wait_for(self._more.wait(), timeout)

    async def _serve_http(self) -> Response | None:
        side = self.side
        loop = self.loop
        deadline = loop.time() + side.open_timeout
        while (end := self._buf.find(b"\r\n\r\n")) < 0:
            if len(self._buf) > MAX_HEAD:
                return error_response(431, "request head too large")
            try:
                await self._read_more(max(0.0, deadline - loop.time()))
            except ConnectionResetError:
                return None
        parsed = parse_head(bytes(self._buf[:end]))
        del self._buf[: end + 4]
        if isinstance(parsed, Response):
            return parsed
        method, target, headers = parsed
        self._request = (method, target)
        denied = side.check(method, target, headers)
        if denied is not None:
            return denied
        if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
            return error_response(411, "send a Content-Length (chunked uploads are not supported)")
        text = headers.get("Content-Length") or "0"
        if not (text.isascii() and text.isdigit()) or len(text) > 18:  # int() would take "+5", " 5", "5_0"
            return error_response(400, "bad Content-Length")
        length = int(text)
        if length > side.max_upload:
            return error_response(413, f"upload of {length} bytes is larger than the limit "
                                       f"({side.max_upload // (1 << 20)} MB)")
        if side.admit is not None:
            refused = side.admit(method, target)
            if refused is not None:
                return refused
        if method == "POST" and "100-continue" in (headers.get("Expect") or "").lower():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await self._read_body(length)
        if body is None:
            return None
        if isinstance(body, Response):
            return body
        try:
            return await side.handle(method, target, headers, body)
        finally:
            body.close()

    async def _read_body(self, length: int) -> "Body | Response | None":
        """The body: in memory up to SPOOL_ABOVE, else in a temporary file; 408 past the deadline."""
        side, loop = self.side, self.loop
        deadline = loop.time() + side.body_timeout
        spool: BinaryIO | None = None
        path: str | None = None
        if length > SPOOL_ABOVE:
            fd, path = tempfile.mkstemp(prefix="emostream-upload-")
            spool = os.fdopen(fd, "wb")
        got = 0
        try:
            while True:
                if spool is not None and self._buf:
                    take = min(len(self._buf), length - got)
                    spool.write(self._buf[:take])
                    del self._buf[:take]
                    got += take
                have = got + len(self._buf)
                if have >= length:
                    break
                left = deadline - loop.time()
                if left <= 0:
                    return error_response(408, f"upload took longer than {side.body_timeout:g} s")
                self.transport.resume_reading()
                try:
                    await self._read_more(min(side.idle_timeout, left))
                except ConnectionResetError:
                    return None
                except asyncio.TimeoutError:
                    if loop.time() >= deadline:
                        return error_response(408, f"upload took longer than {side.body_timeout:g} s")
                    raise
            if spool is None:
                body = Body(bytes(self._buf[:length]))
                self._buf.clear()
                return body
            spool.close()
            spool = None
            self._buf.clear()
            done, path = Body(path=path, size=length), None
            return done
        finally:
            if spool is not None:
                spool.close()
            if path is not None:
                try:
                    os.unlink(path)
                except OSError:
                    pass
