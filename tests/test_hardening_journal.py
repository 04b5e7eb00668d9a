"""Issue 16, the --record journal: a partial last line is repaired before appending, the history is
served again after a restart (``?since=`` across restarts), and a ``since`` older than memory is
served from the file."""

from __future__ import annotations

import asyncio
import json

from serverkit import http, make_server, run, send_stream
from websockets.asyncio.client import connect

from streamer.server import journal


async def _replay(port: int, query: str, until_type: str = "end") -> list[dict]:
    out = []
    async with connect(f"ws://127.0.0.1:{port}/ws?{query}") as ws:
        while True:
            m = json.loads(await asyncio.wait_for(ws.recv(), 20))
            out.append(m)
            if m["type"] == until_type:
                return out


def test_repair_tail(tmp_path):
    p = tmp_path / "j.jsonl"
    assert journal.repair_tail(p) == 0  # no file yet
    p.write_text('{"a":1}\n{"b":2}\n{"stream":"x","type":"win')
    assert journal.repair_tail(p) == len('{"stream":"x","type":"win')
    assert p.read_text() == '{"a":1}\n{"b":2}\n'
    assert journal.repair_tail(p) == 0
    p.write_text("x" * 200_000)  # one partial line longer than a block
    assert journal.repair_tail(p) == 200_000 and p.read_text() == ""


def test_history_survives_a_restart_and_a_torn_last_line(tmp_path):
    rec = tmp_path / "record.jsonl"

    async def first():
        async with make_server(record=str(rec)) as srv:
            got = await send_stream(srv.port, "call", 6)
            await send_stream(srv.port, "other", 2)
            return got

    sent = run(first())
    with open(rec, "a", encoding="utf-8") as fh:  # the power cut: half a line
        fh.write('{"stream":"call","type":"window","seq":99,"sta')

    async def second():
        async with make_server(record=str(rec)) as srv:
            listed = json.loads((await asyncio.to_thread(http, f"http://127.0.0.1:{srv.port}/streams?all=1"))[2])
            assert {s["id"] for s in listed} == {"call", "other"}
            replay = await _replay(srv.port, "stream=call&since=2")
            # a new stream after the restart is recorded on a line of its own
            await send_stream(srv.port, "new", 2)
            return replay

    replay = run(second())
    hello, rest = replay[0], replay[1:]
    first_hello = next(m for m in sent if m["type"] == "hello")
    assert hello["type"] == "hello" and hello["started"] == first_hello["started"]
    assert rest == [m for m in sent if m.get("seq", 0) > 2]  # nothing lost, nothing repeated
    assert all("stream" not in m for m in rest)
    for line in rec.read_text().splitlines():  # the torn line was cut off, every line is JSON
        json.loads(line)


def test_since_older_than_memory_is_served_from_the_journal(tmp_path):
    rec = tmp_path / "record.jsonl"

    async def main():
        async with make_server(record=str(rec), history=3) as srv:
            sent = await send_stream(srv.port, "long", 12)
            replay = await _replay(srv.port, "stream=long&since=0")
            assert [m for m in replay if m["type"] == "error"] == []  # no "history no longer holds" note
            assert replay[1:] == [m for m in sent if m["type"] != "hello"]
            part = await _replay(srv.port, "stream=long&since=4")
            assert part[1:] == [m for m in sent if m.get("seq", 0) > 4]
        # without a journal, the gap is reported as before
        async with make_server(history=3) as srv:
            await send_stream(srv.port, "long", 12)
            replay = await _replay(srv.port, "stream=long&since=0")
            assert replay[1]["type"] == "error" and "no longer holds" in replay[1]["message"]
    run(main())


def test_a_restored_stream_id_can_be_used_again(tmp_path):
    rec = tmp_path / "record.jsonl"

    async def main():
        async with make_server(record=str(rec)) as srv:
            await send_stream(srv.port, "again", 3)
        async with make_server(record=str(rec)) as srv:
            got = await send_stream(srv.port, "again", 2)
            assert got[-1]["type"] == "end" and [m["seq"] for m in got if "seq" in m][0] == 1
            replay = await _replay(srv.port, "stream=again&since=0")
            assert replay[0]["started"] == got[0]["started"]  # the new run replaced the old one
    run(main())
