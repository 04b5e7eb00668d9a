"""Issue 16, WebSocket: hostile messages get an ``error`` and close 1008 (never 1011), close reasons
fit their 123 bytes, errors quote client values short, stream ids are matched whole."""

from __future__ import annotations

import asyncio
import json

import pytest
from serverkit import http, make_server, run, send_stream
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

START = '{"type":"start","sample_rate":8000,"channels":1,"encoding":"pcm_s16le"}'


async def _refused(url: str, *frames: str | bytes) -> tuple[dict, int, str]:
    """Send frames, then return the error message, the close code and the close reason."""
    async with connect(url, max_size=None) as ws:
        for f in frames:
            await ws.send(f)
        msgs = []
        try:
            async for m in ws:
                msgs.append(json.loads(m))
        except ConnectionClosed:
            pass
        code, reason = ws.close_code, ws.close_reason
    errors = [m for m in msgs if m.get("type") == "error"]
    assert errors, msgs
    return errors[0], code, reason


HOSTILE_STARTS = [
    '{"type":"start","sample_rate":NaN}',
    '{"type":"start","sample_rate":Infinity,"channels":1}',
    '{"type":"start","sample_rate":-Infinity}',
    '{"type":"start","sample_rate":1e400}',
    '{"type":"start","sample_rate":8000,"channels":NaN}',
    '{"type":"start","sample_rate":8000,"channels":1e400}',
    '{"type":"start","sample_rate":8000,"channels":-1e400}',
    '{"type":"start","sample_rate":' + "9" * 5000 + "}",
    "[" * 30_000 + "]" * 30_000,
    '{"type":"start","sample_rate":8000,"x":' + "[" * 20_000 + "]" * 20_000 + "}",
    '{"type":"start","sample_rate":8000,"encoding":"' + "\u00e9" * 100 + '"}',
    '{"type":"' + "\U0001F621" * 300 + '"}',
]


def test_hostile_start_messages_get_error_and_1008():
    async def main():
        async with make_server() as srv:
            for i, frame in enumerate(HOSTILE_STARTS):
                err, code, reason = await _refused(f"ws://127.0.0.1:{srv.port}/ingest?stream=h{i}", frame)
                assert code == 1008, (frame[:60], code, reason)
                assert len(reason.encode("utf-8")) <= 123
                assert len(err["message"]) < 300, err
            # the server carries on
            got = await send_stream(srv.port, "after", 2)
            assert got[-1]["type"] == "end"
    run(main(), timeout=120)


def test_hostile_messages_to_a_subscriber_and_after_start():
    async def main():
        async with make_server() as srv:
            await send_stream(srv.port, "s", 2)
            for frame in ("[" * 30_000 + "]" * 30_000, '{"type":NaN}', "\u00e9" * 3000):
                err, code, reason = await _refused(f"ws://127.0.0.1:{srv.port}/ws?stream=s", frame)
                assert code == 1008 and len(reason.encode()) <= 123
            # a hostile second message on a running ingest stream
            err, code, reason = await _refused(f"ws://127.0.0.1:{srv.port}/ingest?stream=t", START,
                                               '{"type":"start","sample_rate":1e400}')
            assert code == 1008
    run(main())


def test_long_client_values_are_quoted_short():
    async def main():
        async with make_server() as srv:
            await send_stream(srv.port, "s", 1)
            long = "7" * 4000 + "x"
            err, code, _ = await _refused(f"ws://127.0.0.1:{srv.port}/ws?stream=s&since={long}")
            assert code == 1008 and len(err["message"]) < 200 and "characters" in err["message"]
            err, code, _ = await _refused(f"ws://127.0.0.1:{srv.port}/ws?stream={'q' * 5000}")
            assert code == 1008 and len(err["message"]) < 300
            err, code, _ = await _refused(f"ws://127.0.0.1:{srv.port}/ingest?stream={'q' * 5000}")
            assert code == 1008 and len(err["message"]) < 300
    run(main())


@pytest.mark.parametrize("sid", ["abc%0A", "abc%0D", "abc%00", "%20abc", "abc%20", "a%C3%A9"])
def test_stream_ids_are_matched_whole(sid):
    async def main():
        async with make_server() as srv:
            err, code, _ = await _refused(f"ws://127.0.0.1:{srv.port}/ingest?stream={sid}", START)
            assert code == 1008 and "stream" in err["message"]
            _, _, body = await asyncio.to_thread(http, f"http://127.0.0.1:{srv.port}/streams?all=1")
            assert json.loads(body) == []
    run(main())
