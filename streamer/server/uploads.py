"""``POST /label``: an uploaded recording, labelled in a bounded pool, answered with the ``label -f json`` object.

Uploads cost disk, not memory: the connection spools a large body to a temporary file
(:class:`streamer.server.connection.Body`), a raw body *is* the audio file, and the file part of a
multipart body is copied out block by block (:func:`extract_upload`). ``jobs`` uploads are
labelled at once and ``queue`` more may wait; past that the server answers 503 with
``Retry-After`` (before the body is read, when it can tell). A recording whose decoded duration
exceeds ``max_seconds`` is refused with 413 before any labelling.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Response

from streamer.errors import EmostreamError, InputError
from streamer.server.budget import MemoryGuard
from streamer.server.config import Labeler
from streamer.server.connection import Body
from streamer.server.responses import error_response, json_response

__all__ = ["Uploads", "upload_payload", "extract_upload", "suffix_for", "render"]

_MAGIC = [(b"RIFF", ".wav"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"ID3", ".mp3"), (b"FORM", ".aiff")]
_BLOCK = 1 << 20
_MAX_PART_HEAD = 16 * 1024


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


def _copy_until(src: BinaryIO, buf: bytes, marker: bytes, dst: BinaryIO | None) -> tuple[bytes, bool]:
    """Copy from ``buf`` then ``src`` into ``dst`` (None: skip) up to ``marker``, block by block.

    Returns what follows the marker (the rest of the buffer) and whether the marker was found
    (False: the body ended first, and everything was copied).
    """
    keep = len(marker) - 1
    while True:
        i = buf.find(marker)
        if i >= 0:
            if dst is not None:
                dst.write(buf[:i])
            return buf[i + len(marker):], True
        more = src.read(_BLOCK)
        if not more:
            if dst is not None:
                dst.write(buf)
            return b"", False
        if len(buf) > keep:  # all but a tail that may hold the start of the marker
            if dst is not None:
                dst.write(buf[: len(buf) - keep])
            buf = buf[len(buf) - keep:]
        buf += more


def extract_upload(headers: Headers, src: BinaryIO, dst: BinaryIO, query: str) -> str:
    """Copy the uploaded file's bytes from a raw or multipart/form-data body into ``dst``; its name.

    The first part with a ``filename`` wins; else the first part named ``file`` or ``audio``.
    Memory stays at a block or two whatever the body's size.

    Raises:
        InputError: a multipart body without a boundary or without a file part.
    """
    ctype = headers.get("Content-Type") or ""
    name = (parse_qs(query).get("filename") or ["upload"])[-1]
    if not ctype.lower().startswith("multipart/form-data"):
        shutil.copyfileobj(src, dst, _BLOCK)
        return os.path.basename(name) or "upload"
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    if not m:
        raise InputError("multipart upload without a boundary")
    delim = b"--" + m.group(1).encode("latin-1")
    buf, found = _copy_until(src, src.read(_BLOCK), delim, None)  # the preamble
    fallback = False
    while found and not buf.startswith(b"--"):
        while len(buf) < _MAX_PART_HEAD and b"\r\n\r\n" not in buf:
            more = src.read(_BLOCK)
            if not more:
                break
            buf += more
        head, sep, buf = buf.partition(b"\r\n\r\n")
        if not sep:
            break
        disp = re.search(rb"(?i)content-disposition:[^\r\n]*", head)
        dtext = disp.group(0).decode("latin-1") if disp else ""
        fname = re.search(r'filename="([^"]*)"', dtext)
        wanted = fname is not None or (not fallback and re.search(r'name="(file|audio)"', dtext) is not None)
        if wanted:
            dst.seek(0)
            dst.truncate()
        buf, found = _copy_until(src, buf, b"\r\n" + delim, dst if wanted else None)
        if fname is not None:
            return os.path.basename(fname.group(1)) or "upload"
        fallback = fallback or wanted
    if fallback:
        return "upload"
    raise InputError("multipart upload holds no file part")


def upload_payload(headers: Headers, body: bytes, query: str) -> tuple[bytes, str]:
    """The uploaded file's bytes and name from a raw or multipart/form-data body held in memory.

    Raises:
        InputError: a multipart body without a boundary or without a file part.
    """
    out = io.BytesIO()
    name = extract_upload(headers, io.BytesIO(body), out, query)
    return out.getvalue(), name


class Uploads:
    """Labels uploads, ``jobs`` at a time, ``queue`` more waiting; beyond that 503 + Retry-After.

    Args:
        labeler: (path, display name) -> the ``label -f json`` object; None: uploads get 503.
        jobs: uploads labelled at once.
        on_done: told each answer's status code (metrics).
        queue: uploads that may wait for a labelling slot.
        max_seconds: the longest recording labelled (decoded duration); None: no limit.
        retry_after: seconds a client is told to wait when the queue is full.
        guard: the server's memory budget; uploads are refused (503) while it is spent.
    """

    def __init__(self, labeler: Labeler | None, jobs: int = 1, on_done: Callable[[int], None] | None = None,
                 queue: int = 4, max_seconds: float | None = None, retry_after: int = 10,
                 guard: MemoryGuard | None = None):
        self.labeler = labeler
        self.jobs = max(1, jobs)
        self.queue = max(0, queue)
        self.max_seconds = max_seconds
        self.retry_after = retry_after
        self.guard = guard
        self.on_done = on_done
        self.pending = 0  # uploads waiting for a slot or being labelled
        self._sem: asyncio.Semaphore | None = None

    def _full(self) -> Response | None:
        if self.guard is not None and self.guard.over():
            message = self.guard.refusal()
        elif self.pending < self.jobs + self.queue:
            return None
        else:
            message = f"busy: {self.pending} uploads are being labelled or waiting; retry in {self.retry_after} s"
        resp = error_response(503, message)
        resp.headers["Retry-After"] = str(self.retry_after)
        return resp

    def admit(self, method: str, target: str) -> Response | None:
        """Refuse an upload before its body is read when the queue is already full (503)."""
        if method == "POST" and urlsplit(target).path == "/label":
            return self._full()
        return None

    async def handle(self, target: str, headers: Headers, body: Body | bytes) -> Response:
        """Answer one ``POST /label`` (or ``POST /render``)."""
        if not isinstance(body, Body):
            body = Body(body)
        if urlsplit(target).path == "/render":
            return await asyncio.to_thread(render, target, body.read())
        resp = await self._answer(target, headers, body)
        if self.on_done is not None:
            self.on_done(resp.status_code)
        return resp

    async def _answer(self, target: str, headers: Headers, body: Body) -> Response:
        if body.size == 0:
            return error_response(400, "empty upload: send an audio file")
        if self.labeler is None:
            return error_response(503, "this server cannot label uploads (no model)")
        full = self._full()
        if full is not None:
            return full
        if self._sem is None:  # made on the event loop that uses it
            self._sem = asyncio.Semaphore(self.jobs)
        self.pending += 1
        try:
            await self._sem.acquire()
        except BaseException:
            self.pending -= 1
            raise
        job = asyncio.ensure_future(asyncio.to_thread(self._label, headers, body, urlsplit(target).query))

        def finished(_: object) -> None:
            # the slot is free when the labelling is, not when its client goes: a client that
            # disconnects cannot make the server label more than ``jobs`` uploads at once
            self._sem.release()  # type: ignore[union-attr]
            self.pending -= 1
        job.add_done_callback(finished)
        return await asyncio.shield(job)

    def _audio_file(self, headers: Headers, body: Body, query: str) -> tuple[str, str]:
        """The upload's audio as a temporary file with a fitting suffix (the caller removes it), and its name."""
        ctype = (headers.get("Content-Type") or "").lower()
        if not ctype.startswith("multipart/form-data"):
            path = body.detach()  # a raw body is the file itself: no copy
            name = os.path.basename((parse_qs(query).get("filename") or ["upload"])[-1]) or "upload"
        else:
            fd, path = tempfile.mkstemp(prefix="emostream-upload-")
            try:
                with os.fdopen(fd, "wb") as dst, body.open() as src:
                    name = extract_upload(headers, src, dst, query)
            except BaseException:
                os.unlink(path)
                raise
        with open(path, "rb") as fh:
            head = fh.read(16)
        suffix = suffix_for(name, head)
        if suffix:
            os.replace(path, path + suffix)
            path += suffix
        return path, name

    def _label(self, headers: Headers, body: Body, query: str) -> Response:
        try:
            path, name = self._audio_file(headers, body, query)
        except InputError as exc:
            return error_response(400, str(exc))
        except OSError:  # the body went with its client before we took it
            return error_response(400, "upload gone")
        try:
            if os.path.getsize(path) == 0:
                return error_response(400, "empty upload: send an audio file")
            if self.max_seconds is not None:
                from streamer.sources import audio_duration

                seconds = audio_duration(path, self.max_seconds)
                if seconds > self.max_seconds:
                    return error_response(413, f"{name}: recording of {seconds:.0f} s or more is longer than this "
                                               f"server labels ({self.max_seconds:g} s, --max-upload-seconds)")
            assert self.labeler is not None
            return json_response(200, self.labeler(path, name))
        except InputError as exc:
            return error_response(415, _renamed(str(exc), path, name))
        except EmostreamError as exc:
            return error_response(500, _renamed(str(exc), path, name))
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass
            if self.pending <= 1:  # the last upload: give the decoder's buffers back to the system
                from streamer.server.budget import trim_heap

                trim_heap()


def _renamed(message: str, path: str, name: str) -> str:
    """An error about the temporary file, told about the upload's own name."""
    return message.replace(path, name)


def render(target: str, body: bytes) -> Response:
    """``POST /render?format=FMT``: a label result (the JSON body: the page's upload) in an export
    format, written by the same writers as ``label -f FMT`` (`streamer.web.export`), as a download."""
    import json

    from streamer.errors import UsageError
    from streamer.server.responses import response
    from streamer.web.export import CONTENT_TYPES, download_name, render_result

    fmt = (parse_qs(urlsplit(target).query).get("format") or ["json"])[-1]
    try:
        result = json.loads(body)
        text = render_result(result, fmt)
    except (ValueError, RecursionError, UsageError, InputError) as exc:   # not JSON, or nested past the recursion limit
        return error_response(400, f"cannot render: {exc}")
    resp = response(200, text.encode("utf-8"), CONTENT_TYPES[fmt] + "; charset=utf-8")
    name = download_name(result.get("source"), fmt)
    resp.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return resp
