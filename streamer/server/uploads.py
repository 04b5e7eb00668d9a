"""``POST /label``: an uploaded recording, labelled in a thread, answered with the ``label -f json`` object."""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Response

from streamer.errors import EmostreamError, InputError
from streamer.server.config import Labeler
from streamer.server.responses import error_response, json_response

__all__ = ["Uploads", "upload_payload", "suffix_for", "render"]

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
    """The uploaded file's bytes and name from a raw or multipart/form-data body.

    Raises:
        InputError: a multipart body without a boundary or without a file part.
    """
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


class Uploads:
    """Labels uploads, ``jobs`` at a time (the others wait their turn).

    Args:
        labeler: (path, display name) -> the ``label -f json`` object; None: uploads get 503.
        jobs: uploads labelled at once.
        on_done: told each answer's status code (metrics).
    """

    def __init__(self, labeler: Labeler | None, jobs: int = 1, on_done: Callable[[int], None] | None = None):
        self.labeler = labeler
        self.jobs = max(1, jobs)
        self.on_done = on_done
        self._sem: asyncio.Semaphore | None = None

    async def handle(self, target: str, headers: Headers, body: bytes) -> Response:
        """Answer one ``POST /label`` (or ``POST /render``)."""
        if urlsplit(target).path == "/render":
            return await asyncio.to_thread(render, target, body)
        resp = await self._answer(target, headers, body)
        if self.on_done is not None:
            self.on_done(resp.status_code)
        return resp

    async def _answer(self, target: str, headers: Headers, body: bytes) -> Response:
        try:
            data, name = upload_payload(headers, body, urlsplit(target).query)
        except InputError as exc:
            return error_response(400, str(exc))
        if not data:
            return error_response(400, "empty upload: send an audio file")
        if self.labeler is None:
            return error_response(503, "this server cannot label uploads (no model)")
        if self._sem is None:  # made on the event loop that uses it
            self._sem = asyncio.Semaphore(self.jobs)
        async with self._sem:
            return await asyncio.to_thread(self._label_bytes, data, name)

    def _label_bytes(self, data: bytes, name: str) -> Response:
        suffix = suffix_for(name, data)
        fd, path = tempfile.mkstemp(prefix="emostream-upload-", suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            assert self.labeler is not None
            return json_response(200, self.labeler(path, name))
        except InputError as exc:
            return error_response(415, str(exc).replace(path, name))
        except EmostreamError as exc:
            return error_response(500, str(exc).replace(path, name))
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass


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
    except (ValueError, UsageError, InputError) as exc:   # ValueError: not JSON
        return error_response(400, f"cannot render: {exc}")
    resp = response(200, text.encode("utf-8"), CONTENT_TYPES[fmt] + "; charset=utf-8")
    name = download_name(result.get("source"), fmt)
    resp.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return resp
