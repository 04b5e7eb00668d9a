"""``GET /metrics`` on a real loopback server: Prometheus text whose values follow real traffic
(ingest, subscribers, a dropped subscriber, uploads), the token required."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import soundfile as sf
from prometheus_client.parser import text_string_to_metric_families
from serverkit import LABELS, http, make_server, run, send_stream, win
from websockets.asyncio.client import connect


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample as {(name, sorted labels): value}."""
    code, ctype, body = http(url)
    assert code == 200 and ctype.startswith("text/plain"), (code, ctype)
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.slow
def test_metrics_follow_real_traffic(tmp_path):
    wav = tmp_path / "tone.wav"
    sf.write(wav, 0.3 * np.sin(2 * np.pi * 220 * np.arange(8000) / 8000), 8000)

    async def main():
        async with make_server(token="t0k", max_queue=16, drop_grace=0.5) as srv:
            base = f"http://127.0.0.1:{srv.port}"
            url = f"{base}/metrics?token=t0k"
            m = await asyncio.to_thread(scrape, url)
            assert value(m, "emostream_streams_active") == 0 and value(m, "emostream_windows_total") == 0
            assert value(m, "process_cpu_seconds_total") > 0 and value(m, "process_resident_memory_bytes") > 0

            # two ingest streams, paced, with one extra subscriber watching the first
            task = asyncio.ensure_future(send_stream(srv.port, "c1", 6, pause=0.05, token="t0k"))
            while srv.hub.get("c1") is None:
                await asyncio.sleep(0.01)
            async with connect(f"ws://127.0.0.1:{srv.port}/ws?stream=c1&token=t0k") as sub:
                await sub.recv()
                m = await asyncio.to_thread(scrape, url)
                assert value(m, "emostream_streams_active") == 1
                assert value(m, "emostream_subscribers_active") == 2  # the ingest connection and this one
                got = await task
            await send_stream(srv.port, "c2", 3, token="t0k")
            windows = sum(msg["type"] == "window" for msg in got) + 3

            # a subscriber that reads nothing is dropped
            s = srv.hub.create("main", {"labels": LABELS})
            stuck = await connect(f"ws://127.0.0.1:{srv.port}/ws?token=t0k", max_queue=1)
            await asyncio.sleep(0.1)
            for i in range(20000):  # until the kernel's buffers are full and its queue overflows
                s.publish({**win(i), "probs": {"calm": 0.5, "pad": "x" * 4000}})
                windows += 1
                if not s.subscribers:
                    break
                if i % 20 == 0:
                    await asyncio.sleep(0.001)
            assert not s.subscribers

            # uploads: one labelled, one not audio
            code, _, _ = await asyncio.to_thread(http, f"{base}/label?token=t0k&filename=a.wav", wav.read_bytes())
            assert code == 200
            code, _, _ = await asyncio.to_thread(http, f"{base}/label?token=t0k&filename=n.txt", b"not audio" * 99)
            assert code == 415

            m = await asyncio.to_thread(scrape, url)
            assert value(m, "emostream_windows_total") == windows
            assert value(m, "emostream_ingest_bytes_total") == (6 + 3) * 8000 * 2
            assert value(m, "emostream_dropped_subscribers_total") == 1
            assert value(m, "emostream_uploads_total", status="200") == 1
            assert value(m, "emostream_uploads_total", status="415") == 1
            assert value(m, "emostream_streams_active") == 1  # main
            # latency is known for the ingest windows (arrival of their last sample), not for publish()
            n = value(m, "emostream_window_latency_seconds_count")
            assert n == 9
            assert value(m, "emostream_window_latency_seconds_bucket", le="+Inf") == n
            assert 0 < value(m, "emostream_window_latency_seconds_sum") < n * 5.0
            assert value(m, "emostream_window_latency_seconds_bucket", le="5.0") == n
            assert value(m, "emostream_requests_total", route="/ingest") == 2
            assert value(m, "emostream_requests_total", route="/label") == 2
            await stuck.close()
    run(main())


def test_metrics_need_the_token():
    async def main():
        async with make_server(token="t0k") as srv:
            code, _, body = await asyncio.to_thread(http, f"http://127.0.0.1:{srv.port}/metrics")
            assert code == 401 and "token" in json.loads(body)["error"]
    run(main())


def test_each_server_has_its_own_registry():
    async def main():
        async with make_server() as a, make_server() as b:
            a.hub.create("x", {"labels": LABELS}).publish(win(0))
            ma = await asyncio.to_thread(scrape, f"http://127.0.0.1:{a.port}/metrics")
            mb = await asyncio.to_thread(scrape, f"http://127.0.0.1:{b.port}/metrics")
            assert value(ma, "emostream_windows_total") == 1 and value(mb, "emostream_windows_total") == 0
    run(main())


def test_latency_of_a_realtime_source_is_measured_from_its_real_time_moment():
    import time

    from serverkit import FakePipeline

    from streamer.server import EmoServer, ServerConfig
    from streamer.sources import ArraySource

    def runner(source, pipe, on_events, realtime=False, stop=None):  # paced like a live source
        t0 = time.monotonic()
        for i in range(1, 4):
            time.sleep(max(0.0, t0 + 0.2 * i + 0.05 - time.monotonic()))  # 50 ms of "processing"
            on_events([{**win(i), "start": 0.2 * i - 0.2, "end": 0.2 * i}])

    async def main():
        async with EmoServer(ServerConfig(port=0), pipeline_factory=FakePipeline, runner=runner) as srv:
            await srv.start_source(ArraySource(np.zeros(8000, np.float32), 8000, uri="x.wav"), realtime=True)
            m = await asyncio.to_thread(scrape, f"http://127.0.0.1:{srv.port}/metrics")
            assert value(m, "emostream_window_latency_seconds_count") == 3
            mean = value(m, "emostream_window_latency_seconds_sum") / 3
            assert 0.04 < mean < 2.0  # the 50 ms it waited, plus a loaded machine's scheduling
    run(main())
