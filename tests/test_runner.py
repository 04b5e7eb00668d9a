"""A pull source run into a stream (streamer/server/runner.py) on a real loopback server: a file in a
thread with its history served afterwards, a live source's capture losses reported in its stream."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
from serverkit import FakePipeline, http, recv_until_seq, run
from websockets.asyncio.client import connect

from streamer.server import EmoServer, ServerConfig


def test_file_source_runs_in_a_thread_then_history_is_served():
    from streamer.sources import ArraySource

    def runner(source, pipe, on_events, realtime=False, stop=None):
        while len(blk := source.read(4000)):
            if stop is not None and stop.is_set():
                break
            evs = pipe.feed(blk)
            if evs:
                on_events(evs)
            time.sleep(0.001)
        on_events(pipe.finish())

    async def main():
        srv = EmoServer(ServerConfig(port=0), pipeline_factory=FakePipeline, runner=runner)
        async with srv:
            y = np.zeros(8000 * 6, np.float32)
            y[8000 * 2: 8000 * 4] = 0.5
            task = srv.start_source(ArraySource(y, 8000, uri="tone.wav"))
            ws = await connect(f"ws://127.0.0.1:{srv.port}/ws")
            hello = json.loads(await ws.recv())
            assert hello["type"] == "hello" and hello["source"] == "tone.wav"
            msgs = await recv_until_seq(ws, 8)
            await task
            assert [m.get("label") for m in msgs[:6]] == ["calm", "calm", "angry", "angry", "calm", "calm"]
            assert [m["type"] for m in msgs[6:]] == ["segment", "end"]
            await ws.close()
            async with connect(f"ws://127.0.0.1:{srv.port}/ws?since=5") as ws2:
                replay = [json.loads(await ws2.recv()) for _ in range(4)]
                assert [m.get("seq") for m in replay] == [None, 6, 7, 8]
    run(main())


def test_live_source_capture_losses_are_reported_in_the_stream():
    from streamer.sources import ArraySource

    class LossyMic(ArraySource):
        live = True

        def __init__(self):
            super().__init__(np.zeros(8000 * 3, np.float32), 8000, uri="mic:test")
            self.overflows = 0

        def stats(self):
            self.overflows += 2
            return {"device": "test mic", "overflows": self.overflows, "overruns": 0, "dropped_frames": 0}

    def runner(source, pipe, on_events, realtime=False, stop=None):
        stop.wait(0.5)  # a live source that runs until stopped
        on_events(pipe.finish())

    async def main():
        srv = EmoServer(ServerConfig(port=0, health_s=0.1), pipeline_factory=FakePipeline, runner=runner)
        async with srv:
            srv.start_source(LossyMic())
            async with connect(f"ws://127.0.0.1:{srv.port}/ws") as ws:
                assert json.loads(await ws.recv())["type"] == "hello"
                warn = json.loads(await ws.recv())
                assert warn["type"] == "error" and warn["message"].startswith("warning: test mic")
                assert "2 input overflow(s)" in warn["message"]
            rows = json.loads((await asyncio.to_thread(http, f"http://127.0.0.1:{srv.port}/streams"))[2])
            assert rows[0]["capture"]["overflows"] >= 2
    run(main())
