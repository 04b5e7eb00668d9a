"""A timeline subscriber and the reference ingest client (used by `emostream listen` and `send`)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from streamer.errors import ProtocolError, UsageError

__all__ = ["format_text", "with_query", "listen", "send_file"]


def with_query(url: str, **params: Any) -> str:
    """``url`` with query parameters set (None removes one)."""
    parts = urlsplit(url)
    q = dict(parse_qsl(parts.query))
    for k, v in params.items():
        if v is None:
            q.pop(k, None)
        else:
            q[k] = str(v)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(q), parts.fragment))


def _t(x: Any) -> str:
    return f"{x:8.2f}" if isinstance(x, (int, float)) else f"{'?':>8}"


def format_text(msg: dict[str, Any]) -> str:
    """One message as a readable line."""
    kind = msg.get("type")
    ch = msg.get("channel_name") or msg.get("channel", "")
    if kind == "hello":
        chans = ",".join(msg.get("channels") or []) or "mix"
        return (f"# {msg.get('source')}: labels {','.join(msg.get('labels') or [])}; "
                f"window {msg.get('window')} s, hop {msg.get('hop')} s; channels {chans}")
    if kind == "window":
        label = msg.get("label") if msg.get("speech") else "(silence)"
        conf = msg.get("confidence")
        return f"{_t(msg.get('start'))} {_t(msg.get('end'))}  {ch:<8} {label or '-':<10} " + \
            (f"{conf:.2f}" if isinstance(conf, (int, float)) else "")
    if kind == "segment":
        return f"{_t(msg.get('start'))} {_t(msg.get('end'))}  {ch:<8} SEGMENT {msg.get('label')} " \
               f"{msg.get('confidence', 0) or 0:.2f}"
    if kind == "alert":
        return f"{_t(msg.get('start'))} {_t(msg.get('end'))}  {ch:<8} ALERT {msg.get('rule')} ({msg.get('label')})"
    if kind == "end":
        return "# end"
    return json.dumps(msg)


def _headers(token: str | None) -> dict[str, str] | None:
    return {"Authorization": f"Bearer {token}"} if token else None


def _refused(exc: BaseException) -> str | None:
    """A one-line reason when the server refused us for good (bad token, origin, address)."""
    from websockets.exceptions import InvalidStatus

    if isinstance(exc, InvalidStatus):
        resp = exc.response
        try:
            detail = json.loads(bytes(resp.body).decode()).get("error", "")
        except (ValueError, AttributeError):
            detail = ""
        return f"server refused the connection: HTTP {resp.status_code} {detail}".strip()
    return None


async def listen(url: str, out: Any, fmt: str = "text", since: int | None = None, token: str | None = None,
                 reconnect: bool = True, max_backoff: float = 5.0) -> int:
    """Print a stream's timeline; reconnect and resume with ``since`` so nothing is lost or repeated.

    Returns the exit status: 0 after the stream's ``end``.
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    last = since
    hello_seen = False
    instance: tuple[Any, Any] | None = None  # (stream, started) of the stream being followed
    backoff = 0.25
    connected_once = False
    while True:
        target = with_query(url, since=last) if last is not None else url
        try:
            async with connect(target, additional_headers=_headers(token), max_size=None,
                               open_timeout=10) as ws:
                connected_once = True
                backoff = 0.25
                async for frame in ws:
                    if isinstance(frame, bytes):
                        continue
                    msg = json.loads(frame)
                    kind = msg.get("type")
                    seq = msg.get("seq")
                    if kind == "hello":
                        ident = (msg.get("stream"), msg.get("started"))
                        if hello_seen and instance is not None and ident != instance and last is not None:
                            # the server restarted: a new stream whose seq starts again from 1
                            print("emostream: the stream restarted; reading it from the start",
                                  file=sys.stderr, flush=True)
                            instance, last = ident, None
                            break
                        instance = ident
                        if hello_seen:
                            continue
                        hello_seen = True
                    elif kind == "error":
                        if not hello_seen:  # refused: no such stream, bad since
                            raise ProtocolError(f"server: {msg.get('message')}")
                        print(f"emostream: server: {msg.get('message')}", file=sys.stderr, flush=True)
                        continue
                    elif isinstance(seq, int):
                        if last is not None and seq <= last:
                            continue  # already printed (never expected, but never twice)
                        last = seq
                    out.write((frame if fmt == "jsonl" else format_text(msg)) + "\n")
                    out.flush()
                    if kind == "end":
                        return 0
        except BrokenPipeError:  # our stdout went away (piped into head): not a network problem
            raise
        except (ConnectionClosed, OSError, asyncio.TimeoutError) as exc:
            refused = _refused(exc)
            if refused or not reconnect or not connected_once:
                if refused:
                    raise ProtocolError(refused) from None
                raise ProtocolError(f"cannot reach {url}: {exc}" if not connected_once else
                                    f"connection lost: {exc}") from None
        except Exception as exc:
            refused = _refused(exc)
            if refused:
                raise ProtocolError(refused) from None
            raise
        if not reconnect:
            raise ProtocolError("connection closed before the end of the stream")
        print(f"emostream: reconnecting (resuming after seq {last})", file=sys.stderr, flush=True)
        await asyncio.sleep(backoff)
        backoff = min(max_backoff, backoff * 2)


async def send_file(path: str, url: str, *, realtime: bool = False, rate: int | None = None,
                    encoding: str = "pcm_s16le", token: str | None = None, out: Any = None,
                    block_s: float = 0.1) -> list[dict[str, Any]]:
    """Stream a file through the ingest protocol; returns (and prints to ``out``) the timeline."""
    import numpy as np
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from streamer import protocol
    from streamer.codecs import encode_pcm
    from streamer.sources import open_source

    src = open_source(path)
    messages: list[dict[str, Any]] = []
    errors: list[str] = []
    with src:
        rate = rate or src.sample_rate
        if not protocol.MIN_RATE <= rate <= protocol.MAX_RATE:
            raise UsageError(f"--rate must be between {protocol.MIN_RATE} and {protocol.MAX_RATE}")
        resampler = None
        if rate != src.sample_rate:
            import soxr

            resampler = soxr.ResampleStream(src.sample_rate, rate, src.channels, dtype="float32")
        block = max(1, int(block_s * src.sample_rate))
        try:
            ws = await connect(url, additional_headers=_headers(token), max_size=None, open_timeout=10)
        except Exception as exc:
            raise ProtocolError(_refused(exc) or f"cannot reach {url}: {exc}") from None

        async def receive() -> None:
            try:
                async for frame in ws:
                    if isinstance(frame, bytes):
                        continue
                    msg = json.loads(frame)
                    if msg.get("type") == "error":
                        text = str(msg.get("message"))
                        if text.startswith("warning:"):  # a notice (lost audio): the stream goes on
                            print(f"emostream: server: {text}", file=sys.stderr, flush=True)
                        else:  # raised once at the end, printed once by the command line
                            errors.append(text)
                        continue
                    messages.append(msg)
                    if out is not None:
                        out.write(format_text(msg) + "\n")
                        out.flush()
                    if msg.get("type") == "end":
                        return
            except ConnectionClosed:
                pass

        reader = asyncio.ensure_future(receive())
        try:
            await ws.send(protocol.encode(protocol.Start(rate, src.channels, encoding).to_dict()))
            t0 = time.perf_counter()
            sent = 0
            while not reader.done():
                blk = src.read(block)
                last = len(blk) == 0
                if resampler is not None:
                    blk = resampler.resample_chunk(np.ascontiguousarray(blk, np.float32), last=last)
                if len(blk):
                    await ws.send(encode_pcm(blk, encoding))
                    sent += len(blk)
                if last:
                    break
                if realtime:
                    ahead = sent / rate - (time.perf_counter() - t0)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
            if not reader.done():
                await ws.send(protocol.encode(protocol.Stop().to_dict()))
            await asyncio.wait_for(reader, 600)
        except ConnectionClosed:
            await asyncio.wait_for(reader, 10)
        finally:
            reader.cancel()
            await ws.close()
    for w in src.warnings:
        print(f"emostream: warning: {w}", file=sys.stderr)
    if errors:
        raise ProtocolError(f"server: {errors[-1]}")
    if not messages or messages[-1].get("type") != "end":
        raise ProtocolError("the server closed the stream before its end")
    return messages
