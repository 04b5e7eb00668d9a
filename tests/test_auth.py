"""Who may talk to the server (streamer/server/auth.py) over real loopback connections: the token
on every HTTP and WebSocket request, binding beyond loopback, browser origins."""

from __future__ import annotations

import asyncio
import json

import pytest
from serverkit import LABELS, http, make_server, run
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from streamer.errors import UsageError
from streamer.server import is_loopback


def test_token_is_checked_on_every_request():
    async def main():
        async with make_server(token="s3cret") as srv:
            srv.hub.create("main", {"labels": LABELS})
            base = f"127.0.0.1:{srv.port}"
            for url, headers in ((f"ws://{base}/ws", None), (f"ws://{base}/ws?token=wrong", None),
                                 (f"ws://{base}/ingest?stream=a", None)):
                with pytest.raises(InvalidStatus) as e:
                    await connect(url, additional_headers=headers)
                assert e.value.response.status_code == 401
            async with connect(f"ws://{base}/ws?token=s3cret") as ws:
                assert json.loads(await ws.recv())["type"] == "hello"
            async with connect(f"ws://{base}/ws", additional_headers={"Authorization": "Bearer s3cret"}) as ws:
                assert json.loads(await ws.recv())["type"] == "hello"
            status = [(await asyncio.to_thread(http, u, d, h))[0] for u, d, h in (
                (f"http://{base}/streams", None, None),
                (f"http://{base}/", None, None),
                (f"http://{base}/label", b"RIFF", None),
                (f"http://{base}/streams?token=s3cret", None, None),
                (f"http://{base}/streams", None, {"Authorization": "Bearer s3cret"}),
            )]
            assert status == [401, 401, 401, 200, 200]
    run(main())


def test_non_loopback_needs_a_token():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")

    async def main():
        with pytest.raises(UsageError, match="token"):
            await make_server(host="0.0.0.0").start()
    run(main())


def test_origin_check():
    async def main():
        async with make_server(origins=["https://dash.example"]) as srv:
            srv.hub.create("main", {"labels": LABELS})
            base = f"127.0.0.1:{srv.port}"
            with pytest.raises(InvalidStatus) as e:
                await connect(f"ws://{base}/ws", origin="http://evil.example")
            assert e.value.response.status_code == 403
            for origin in (f"http://{base}", "https://dash.example"):
                async with connect(f"ws://{base}/ws", origin=origin) as ws:
                    assert json.loads(await ws.recv())["type"] == "hello"
            code, _, _ = await asyncio.to_thread(http, f"http://{base}/label", b"x", {"Origin": "http://evil.example"})
            assert code == 403
    run(main())
