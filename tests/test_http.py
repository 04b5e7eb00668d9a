"""The sniffing connection on its own: it takes callables and limits, never the application.
A bare websockets server with it answers POSTs through ``handle``, refuses before reading a body,
and passes GETs on to websockets unchanged."""

from __future__ import annotations

import asyncio
import functools
import json

from serverkit import http, run
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from streamer.server.connection import HttpSide, SniffingConnection
from streamer.server.responses import error_response, json_response


def test_sniffing_connection_with_plain_callables():
    seen = []

    def check(method, target, headers):
        return error_response(401, "no") if "deny" in target else None

    async def handle(method, target, headers, body):
        data = body.read() if hasattr(body, "read") else body  # a Body (spooled when large) or bytes
        seen.append((method, target, data))
        return json_response(200, {"got": len(data)})

    side = HttpSide(check=check, handle=handle, answered=lambda conn, m, t, status, s: seen.append((m, status)),
                    max_upload=1000, open_timeout=2, idle_timeout=0.5)

    async def echo(ws):
        async for msg in ws:
            await ws.send(msg)

    async def main():
        async with serve(echo, "127.0.0.1", 0, create_connection=functools.partial(SniffingConnection, side=side),
                         open_timeout=None) as server:
            port = server.sockets[0].getsockname()[1]
            base = f"http://127.0.0.1:{port}"
            code, _, body = await asyncio.to_thread(http, f"{base}/x", b"hello", None, "PUT")
            assert code == 200 and json.loads(body) == {"got": 5}
            code, _, _ = await asyncio.to_thread(http, f"{base}/deny", b"y" * 500)
            assert code == 401
            code, _, _ = await asyncio.to_thread(http, f"{base}/big", b"y" * 1001)
            assert code == 413
            r, w = await asyncio.open_connection("127.0.0.1", port)  # a body that stalls
            w.write(b"POST /slow HTTP/1.1\r\nContent-Length: 10\r\n\r\n123")
            assert (await asyncio.wait_for(r.read(), 5)).startswith(b"HTTP/1.1 408")
            w.close()
            async with connect(f"ws://127.0.0.1:{port}/any") as ws:  # GET: websockets as usual
                await ws.send("ping")
                assert await ws.recv() == "ping"
            assert not side.open
    run(main())
    assert seen == [("PUT", "/x", b"hello"), ("PUT", 200), ("POST", 401), ("POST", 413), ("POST", 408)]
