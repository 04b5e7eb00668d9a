"""Issue 16, memory: ingest backpressure (a server-wide budget of unanalysed audio), history
bounded in bytes (ended streams' first), freed memory given back."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np
import pytest
from serverkit import FakePipeline, run
from websockets.asyncio.client import connect

from streamer.server import EmoServer, ServerConfig
from streamer.server.budget import ByteBudget, trim_heap
from streamer.server.memory import MESSAGE_OVERHEAD, MemoryBackend
from streamer.server.message import Message


def _msg(seq: int, size: int = 1000) -> Message:
    return Message(seq, text=json.dumps({"type": "window", "seq": seq, "pad": "x" * size}))


def test_history_is_bounded_in_bytes_per_stream():
    b = MemoryBackend(history=10_000, history_bytes=50_000, total_bytes=10 << 20)
    b.start("a", Message(None, text="{}"), "ingest")
    for seq in range(1, 201):
        b.append("a", _msg(seq))
    kept, gap = b.read_since("a", 0)
    per = len(_msg(1).text) + MESSAGE_OVERHEAD
    assert len(kept) == 50_000 // per and b.bytes <= 50_000
    assert [m.seq for m in kept] == list(range(201 - len(kept), 201))  # the newest, consecutive
    assert gap == 1
    kept, gap = b.read_since("a", 195)
    assert [m.seq for m in kept] == [196, 197, 198, 199, 200] and gap is None


def test_total_history_drops_ended_streams_first():
    b = MemoryBackend(history=10_000, history_bytes=1 << 20, total_bytes=120_000)
    for sid in ("old", "live"):
        b.start(sid, Message(None, text="{}"), "ingest")
    for seq in range(1, 61):
        b.append("old", _msg(seq))
    b.end("old")
    for seq in range(1, 61):
        b.append("live", _msg(seq))
    assert b.bytes <= 120_000
    assert b.read_since("old", 0) == ([], None)  # the ended stream's history went first
    kept, _ = b.read_since("live", 0)
    assert len(kept) == 60
    for seq in range(61, 200):  # now the live stream itself is trimmed, oldest first
        b.append("live", _msg(seq))
    kept, gap = b.read_since("live", 0)
    assert b.bytes <= 120_000 and kept[-1].seq == 199 and gap == 1 and kept[0].seq > 1
    b.forget("live")
    assert b.bytes == 0


def test_byte_budget_wakes_waiters():
    async def main():
        budget = ByteBudget(100)
        budget.take(150)
        assert budget.over()
        waiter = asyncio.ensure_future(budget.changed())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        budget.give(100)
        await asyncio.wait_for(waiter, 1)
        assert not budget.over() and budget.used == 50
    run(main())


class SlowPipeline(FakePipeline):
    """The fake pipeline, analysing at a bounded speed (as an overloaded server does)."""

    def feed(self, block):
        time.sleep(0.02)
        return super().feed(block)


@pytest.mark.slow  # 4 x 60 s of audio through a deliberately slow pipeline
def test_fast_senders_are_held_to_the_ingest_budget():
    budget = 256 << 10
    frame = 32 << 10  # 1 s of 16 kHz 16-bit audio
    peak = [0]

    async def sender(port: int, sid: str, seconds: int) -> list[dict]:
        pcm = (0.3 * np.sin(np.arange(16000) * 0.1) * 32767).astype("<i2").tobytes()
        got = []
        async with connect(f"ws://127.0.0.1:{port}/ingest?stream={sid}", ping_interval=None) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "channels": 1}))

            async def read():
                async for m in ws:
                    got.append(json.loads(m))
            reader = asyncio.ensure_future(read())
            for _ in range(seconds):
                await ws.send(pcm)  # as fast as the server lets us
            await ws.send('{"type":"stop"}')
            await asyncio.wait_for(reader, 120)
        return got

    async def main():
        srv = EmoServer(ServerConfig(port=0, ingest_budget=budget), pipeline_factory=SlowPipeline)
        async with srv:
            stop = threading.Event()

            async def watch():
                while not stop.is_set():
                    peak[0] = max(peak[0], srv.ingest.budget.used)
                    await asyncio.sleep(0.001)
            w = asyncio.ensure_future(watch())
            results = await asyncio.gather(*(sender(srv.port, f"s{i}", 60) for i in range(4)))
            stop.set()
            await w
            for got in results:  # nothing lost: one window per second sent
                assert sum(1 for m in got if m["type"] == "window") == 60 and got[-1]["type"] == "end"
            assert srv.ingest.budget.used == 0
    run(main(), timeout=180)
    # each of the 4 streams may hold one frame beyond the budget while its last one is analysed
    assert 0 < peak[0] <= budget + 2 * 4 * frame, peak[0]


def test_trim_heap_runs_and_is_rate_limited():
    assert trim_heap(min_interval=0.0) in (True, False)
    assert trim_heap(min_interval=3600.0) is False


def test_a_spent_memory_budget_refuses_new_streams_and_uploads():
    import io

    import soundfile as sf
    from serverkit import check_audio_labeler, http

    from streamer.server.budget import MemoryGuard, rss_bytes

    assert rss_bytes() > 1 << 20
    assert not MemoryGuard(None).over() and not MemoryGuard(1 << 40).over() and MemoryGuard(1 << 20).over()

    async def main():
        srv = EmoServer(ServerConfig(port=0, memory_budget=1 << 20), pipeline_factory=FakePipeline,
                        labeler=check_audio_labeler)
        async with srv:
            async with connect(f"ws://127.0.0.1:{srv.port}/ingest?stream=x") as ws:
                err = json.loads(await ws.recv())
                await ws.wait_closed()
            assert ws.close_code == 1013 and "memory budget" in err["message"]
            buf = io.BytesIO()
            sf.write(buf, np.zeros(16000, np.float32), 16000, format="WAV")
            code, _, body = await asyncio.to_thread(http, f"http://127.0.0.1:{srv.port}/label", buf.getvalue())
            assert code == 503 and b"memory budget" in body
            srv.guard.limit = 1 << 40  # memory back under the budget: served again
            srv.guard._at = -1e9
            code, _, _ = await asyncio.to_thread(http, f"http://127.0.0.1:{srv.port}/label", buf.getvalue())
            assert code == 200
    run(main())


def test_serve_defaults_to_a_300_mb_budget():
    from streamer.cli import build_parser
    from streamer.cli.args import server_config

    args = build_parser().parse_args(["serve"])
    assert server_config(args).memory_budget == 300 << 20
    args = build_parser().parse_args(["serve", "--memory-budget", "512", "--allowed-host", "calls.example",
                                      "--max-upload-seconds", "60"])
    cfg = server_config(args)
    assert cfg.memory_budget == 512 << 20 and cfg.allowed_hosts == ["calls.example"] and cfg.max_upload_seconds == 60
