"""Sending to a WebSocket peer: the subscriber loop, errors that close, and input that is refused."""

from __future__ import annotations

import asyncio
import functools
from typing import Callable

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed
from websockets.protocol import OPEN

from streamer import events, protocol
from streamer.errors import ProtocolError
from streamer.server.hub import Subscriber

__all__ = ["fail", "reject_input", "serve_subscriber", "pump", "abort_later", "try_send"]


async def fail(ws: ServerConnection, message: str, grace: float, code: int = 1008) -> None:
    """Send an ``error`` and close the connection cleanly (abort it after ``grace`` seconds)."""
    try:
        await asyncio.wait_for(ws.send(events.encode(events.Error(message))), grace)
        await ws.close(code, protocol.close_reason(message))  # 123 bytes of UTF-8 at most
    except (ConnectionClosed, asyncio.TimeoutError):
        ws.transport.abort()


def abort_later(ws: ServerConnection, grace: float) -> Callable[[Subscriber], None]:
    """An ``on_drop`` callback: a dropped subscriber's connection is cut after ``grace`` seconds
    unless it read its backlog and the error (the pump then closes it itself)."""
    def dropped(sub: Subscriber) -> None:
        asyncio.get_running_loop().call_later(grace, _abort_if_open, ws)
    return dropped


def _abort_if_open(ws: ServerConnection) -> None:
    if ws.transport is not None and not ws.transport.is_closing():
        ws.transport.abort()


def try_send(ws: ServerConnection, limit: int, text: str) -> bool:
    """Write a frame without waiting, when the connection is open and its buffer is small."""
    transport = ws.transport
    if (ws.protocol.state is not OPEN or getattr(ws, "send_in_progress", None) is not None or transport is None
            or transport.is_closing() or transport.get_write_buffer_size() > limit):
        return False
    broadcast([ws], text)
    return True


async def pump(ws: ServerConnection, sub: Subscriber, replay: list[str], write_limit: int) -> None:
    """Send the replay then every frame of the subscriber until it closes; 1008 if it was dropped.

    Once the replay is out, live frames are written straight to the connection by the producer
    while nothing waits and the connection's write buffer is under ``write_limit``; otherwise they
    queue and this task sends them with flow control.
    """
    await sub.run(ws.send, replay, functools.partial(try_send, ws, write_limit))
    if sub.dropped:
        await ws.close(1008, "too slow")


async def reject_input(ws: ServerConnection, what: str) -> str:
    """Wait for the peer: any message it sends is a protocol error; returns the error text."""
    msg = await ws.recv()
    if isinstance(msg, bytes):
        return f"binary frames are not accepted on {what}"
    if len(msg) > protocol.MAX_TEXT_BYTES:
        return f"message too large (limit {protocol.MAX_TEXT_BYTES} bytes)"
    try:
        m = protocol.decode(msg)
    except ProtocolError as exc:
        return str(exc)
    return f"unexpected message type {protocol.quote(m['type'])} on {what}"


async def serve_subscriber(ws: ServerConnection, sub: Subscriber, replay: list[str], what: str,
                           grace: float, write_limit: int) -> None:
    """Send a subscriber's frames while refusing anything the peer sends; stay open after the
    stream's end (history) until the peer goes or misbehaves."""
    sender = asyncio.ensure_future(pump(ws, sub, replay, write_limit))
    reader = asyncio.ensure_future(reject_input(ws, what))
    try:
        done, _ = await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
        if reader in done and not reader.cancelled() and reader.exception() is None:
            sub.close()
            sender.cancel()
            await fail(ws, reader.result(), grace)
        elif sender in done:
            if sender.exception() is None and not sub.dropped:
                await fail(ws, await reader, grace)
    except ConnectionClosed:
        pass
    finally:
        sub.close()
        for t in (sender, reader):
            t.cancel()
        await asyncio.gather(sender, reader, return_exceptions=True)
