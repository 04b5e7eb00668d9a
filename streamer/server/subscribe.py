"""``/ws``: a subscriber of one stream (replay from ``since``, then live), or of every stream
(``?streams=all``, the wallboard feed)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from websockets.asyncio.server import ServerConnection

from streamer import events, protocol
from streamer.errors import ProtocolError, ServiceUnavailable
from streamer.server.config import MAIN_STREAM, ServerConfig
from streamer.server.hub import Hub
from streamer.server.wsio import abort_later, fail, serve_subscriber

__all__ = ["subscribe", "parse_since"]

log = logging.getLogger("emostream.server")


def parse_since(params: dict[str, str]) -> int:
    """The ``since`` parameter (default 0).

    Raises:
        ProtocolError: not a whole number of 0 or more.
    """
    return protocol.parse_since(params.get("since", "0"))


async def subscribe(ws: ServerConnection, params: dict[str, str], hub: Hub, cfg: ServerConfig) -> None:
    """Serve one ``/ws`` connection until the peer goes, misbehaves or is dropped."""
    if "streams" in params:
        return await _feed(ws, params, hub, cfg)
    try:
        since = parse_since(params)
    except ProtocolError as exc:
        return await fail(ws, str(exc), cfg.drop_grace)
    sid = params.get("stream")
    if sid is None:
        sid = MAIN_STREAM if hub.get(MAIN_STREAM) else None
        if sid is None and len(hub.streams) == 1:
            sid = next(iter(hub.streams))
    try:
        stream = await hub.find(sid) if sid else None
    except ServiceUnavailable as exc:  # another node's stream cannot be looked up now: 1013, try again later
        log.warning("subscriber to %s refused: %s", sid, exc)
        return await fail(ws, f"{exc}; try again later", cfg.drop_grace, code=1013)
    if stream is None or stream.hello is None:
        ids = ", ".join(sorted(hub.streams)) or "none yet"
        what = f"no stream {protocol.quote(sid)}" if sid else "no default stream: add ?stream=ID"
        return await fail(ws, f"{what} (streams: {ids})", cfg.drop_grace)
    sub, replay, gap = hub.subscribe(stream, since, on_drop=abort_later(ws, cfg.drop_grace))
    if gap is not None and hub.record_path is not None:  # older than memory: from the --record journal
        replay, gap = await _from_journal(hub.record_path, stream, since, replay, gap)
    if gap is not None:  # the oldest kept message follows the hello
        kept = json.loads(replay[1 if stream.hello_text else 0]).get("seq")
        note = events.encode(events.Error(
            f"history no longer holds seq {gap} to {kept - 1}; replaying from {kept}"))
        replay = replay[:1] + [note] + replay[1:]
    await serve_subscriber(ws, sub, replay, "/ws", cfg.drop_grace, cfg.write_limit)


async def _from_journal(path: str, stream: Any, since: int, replay: list[str], gap: int
                        ) -> tuple[list[str], int | None]:
    """The messages after ``since`` that memory no longer holds, read back from the journal (in a thread)."""
    from streamer.server import journal

    head = 1 if stream.hello_text else 0
    kept = json.loads(replay[head]).get("seq") if len(replay) > head else stream.seq + 1
    older = await asyncio.to_thread(journal.read_range, path, stream.id, stream.started, since, kept)
    if not older:
        return replay, gap
    replay = replay[:head] + older + replay[head:]
    first = json.loads(older[0]).get("seq")
    return replay, (None if first == since + 1 else gap)


async def _feed(ws: ServerConnection, params: dict[str, str], hub: Hub, cfg: ServerConfig) -> None:
    """``/ws?streams=all``: the streams list and each live stream's hello, then every stream's
    messages as they happen, each with ``"stream": ID``."""
    if params["streams"] != "all":
        return await fail(ws, f"streams must be 'all', got {protocol.quote(params['streams'])}", cfg.drop_grace)
    if "stream" in params or "since" in params:
        return await fail(ws, "streams=all takes neither stream= nor since=", cfg.drop_grace)
    sub, first = await hub.watch(cfg.feed_queue, on_drop=abort_later(ws, cfg.drop_grace))
    await serve_subscriber(ws, sub, first, "/ws?streams=all", cfg.drop_grace, cfg.write_limit)
