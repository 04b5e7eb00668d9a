"""Network ingest over real loopback connections: concurrent streams with their own timelines,
G.711 input, bad inputs, and the send/listen clients. The real Pipeline runs with a stand-in
classifier (no model file needed); reference timelines come from the same pipeline offline."""

from __future__ import annotations

import asyncio
import io
import json

import numpy as np
import pytest
import soundfile as sf
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from streamer.codecs import decode_pcm, encode_pcm
from streamer.config import FeatureConfig, ModelMeta
from streamer.errors import ProtocolError
from streamer.server import EmoServer, ServerConfig
from streamer.pipeline import make_pipeline_factory

LABELS = ["calm", "angry", "sad"]
RATE = 8000


class StandInClassifier:
    """Deterministic probabilities from the window's mean MFCCs (stands in for the TFLite model)."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        m = x.mean(axis=1)
        logits = np.stack([m[:, 1], m[:, 2], m[:, 3]], axis=1) / 10.0
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


META = ModelMeta(name="stand-in", version="0", labels=LABELS, features=FeatureConfig())


def factory(channels="mix", names=None):
    return make_pipeline_factory(META, StandInClassifier(), channels=channels, channel_names=names)


def signal(seed: int, seconds: float, channels: int = 1) -> np.ndarray:
    """Speech-like bursts: a different pitch and rhythm per seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    out = []
    for c in range(channels):
        f0 = 120 + 40 * ((seed + 3 * c) % 5)
        env = (np.sin(2 * np.pi * (0.3 + 0.1 * ((seed + c) % 4)) * t) > -0.3).astype(np.float32)
        y = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) * 0.2 * env
        out.append(y + rng.normal(0, 0.003, len(t)))
    return np.stack(out, axis=1).astype(np.float32)


def offline(y: np.ndarray, encoding: str, channels="mix", names=None) -> list[dict]:
    """The reference: the same decoded audio through the same pipeline in one process."""
    pipe = factory(channels, names)(RATE, y.shape[1])
    x = decode_pcm(encode_pcm(y, encoding), encoding, y.shape[1])
    evs = []
    for i in range(0, len(x), 1600):
        evs += pipe.feed(x[i:i + 1600])
    evs += pipe.finish()
    return [{k: v for k, v in e.items() if k != "raw"} for e in evs]


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def strip(msgs):
    return [{k: v for k, v in m.items() if k != "seq"} for m in msgs if m["type"] not in ("hello", "end")]


def close_enough(a: list[dict], b: list[dict]) -> bool:
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


async def ingest(port, sid, y, encoding="pcm_s16le", frame_s=0.2, realtime=False, start=None, pause=0.0):
    """Send one stream; returns every message the ingest connection got back."""
    got = []
    async with connect(f"ws://127.0.0.1:{port}/ingest?stream={sid}") as ws:
        await ws.send(json.dumps(start or {"type": "start", "sample_rate": RATE, "channels": y.shape[1],
                                           "encoding": encoding}))
        step = int(frame_s * RATE)
        for i in range(0, len(y), step):
            await ws.send(encode_pcm(y[i:i + step], encoding))
            if realtime or pause:
                await asyncio.sleep(frame_s if realtime else pause)
        await ws.send('{"type":"stop"}')
        async for frame in ws:
            got.append(json.loads(frame))
    return got


def make_server(**cfg):
    return EmoServer(ServerConfig(port=0, **cfg), pipeline_factory=factory())


def test_concurrent_streams_each_get_their_own_timeline():
    ys = {f"call-{i}": signal(i, 6 + 2 * i) for i in range(4)}

    async def main():
        async with make_server(workers=2) as srv:
            results = await asyncio.gather(*(ingest(srv.port, sid, y) for sid, y in ys.items()))
            for (sid, y), got in zip(ys.items(), results):
                assert got[0]["type"] == "hello" and got[0]["stream"] == sid and got[0]["labels"] == LABELS
                assert got[-1]["type"] == "end"
                assert [m["seq"] for m in got[1:]] == list(range(1, len(got)))
                ref = offline(y, "pcm_s16le")
                assert close_enough(strip(got), ref), sid
                assert sum(m["type"] == "window" for m in got) == sum(e["type"] == "window" for e in ref)
            # a subscriber watching one of them afterwards gets the same timeline
            async with connect(f"ws://127.0.0.1:{srv.port}/ws?stream=call-2") as ws:
                msgs = [json.loads(await ws.recv()) for _ in range(len(results[2]))]
            assert msgs == results[2]
    run(main())


@pytest.mark.parametrize("encoding", ["mulaw", "alaw", "f32le"])
def test_g711_and_float_ingest_match_offline(encoding):
    y = signal(7, 7)

    async def main():
        async with make_server() as srv:
            got = await ingest(srv.port, "tel", y, encoding, frame_s=0.02)
            assert got[0]["encoding"] == encoding and got[0]["input_rate"] == RATE
            assert close_enough(strip(got), offline(y, encoding))
    run(main())


def test_stereo_split_with_channel_names():
    y = signal(1, 6, channels=2)

    async def main():
        srv = EmoServer(ServerConfig(port=0), pipeline_factory=factory("split", ["agent", "customer"]))
        async with srv:
            got = await ingest(srv.port, "stereo", y, "mulaw")
            assert got[0]["channels"] == ["agent", "customer"]
            wins = [m for m in got if m["type"] == "window"]
            assert {m["channel_name"] for m in wins} == {"agent", "customer"}
            assert close_enough(strip(got), offline(y, "mulaw", "split", ["agent", "customer"]))
    run(main())


def test_subscriber_watches_a_live_ingest_stream_and_streams_lists_it():
    y = signal(3, 5)

    async def main():
        async with make_server() as srv:
            async with connect(f"ws://127.0.0.1:{srv.port}/ingest?stream=live-1") as ing:
                await ing.send(json.dumps({"type": "start", "sample_rate": RATE, "channels": 1}))
                assert json.loads(await ing.recv())["type"] == "hello"
                async with connect(f"ws://127.0.0.1:{srv.port}/ws?stream=live-1") as sub:
                    assert json.loads(await sub.recv())["stream"] == "live-1"
                    for i in range(0, len(y), 1600):
                        await ing.send(encode_pcm(y[i:i + 1600], "pcm_s16le"))
                    first = json.loads(await sub.recv())
                    assert first["type"] == "window" and first["seq"] == 1
                    rows = srv.hub.list()
                    assert rows[0]["id"] == "live-1" and rows[0]["live"] and rows[0]["current"]
                    await ing.send('{"type":"stop"}')
                    rest = []
                    while not rest or rest[-1]["type"] != "end":
                        rest.append(json.loads(await sub.recv()))
                    assert [m["seq"] for m in [first] + rest] == list(range(1, len(rest) + 2))
            assert srv.hub.list() == []  # no longer live
    run(main())


async def expect_error(port, sid, messages, match):
    async with connect(f"ws://127.0.0.1:{port}/ingest?stream={sid}", max_size=None) as ws:
        for m in messages:
            await ws.send(m)
        got = []
        try:
            async for frame in ws:
                got.append(json.loads(frame))
        except ConnectionClosed:
            pass
        errors = [m for m in got if m["type"] == "error"]
        assert errors and match in errors[0]["message"], got
        assert ws.close_code == 1008
        return got


START = json.dumps({"type": "start", "sample_rate": RATE, "channels": 1, "encoding": "pcm_s16le"})


@pytest.mark.parametrize("messages,match", [
    ([b"\x00\x00" * 100], "before the start"),
    (['{"type":"start","sample_rate":8000,"encoding":"opus"}'], "encoding"),
    (['{"type":"start","sample_rate":50}'], "sample_rate"),
    (["garbage"], "valid JSON"),
    (['{"type":"stop"}'], "first message must be start"),
    ([START, b"\x00\x00\x00"], "whole number"),
    ([START, START], "start sent twice"),
    ([START, '{"type":"pause"}'], "unknown message type"),
    ([START, b"\x00" * (2 << 20)], "larger than the limit"),
    ([START.replace("pcm_s16le", "f32le"), np.array([0.1, np.nan] * 400, "<f4").tobytes()], "NaN"),
])
@pytest.mark.slow
def test_bad_ingest_inputs_get_an_error_and_do_not_affect_other_streams(messages, match):
    y = signal(5, 4)

    async def main():
        async with make_server() as srv:
            good = asyncio.ensure_future(ingest(srv.port, "good", y, frame_s=0.25, pause=0.05))
            await asyncio.sleep(0.2)
            got = await expect_error(srv.port, "bad", messages, match)
            if got and got[0]["type"] == "hello":
                assert got[-1]["type"] == "end"  # a started stream is ended, not left open
            assert close_enough(strip(await good), offline(y, "pcm_s16le"))
    run(main())


def test_stream_id_in_use_and_missing_id():
    async def main():
        async with make_server() as srv:
            async with connect(f"ws://127.0.0.1:{srv.port}/ingest?stream=dup") as first:
                await first.send(START)
                assert json.loads(await first.recv())["type"] == "hello"
                await expect_error(srv.port, "dup", [], "in use")
                await first.send(encode_pcm(signal(0, 1), "pcm_s16le"))
                await first.send('{"type":"stop"}')
                assert [json.loads(f)["type"] async for f in first][-1] == "end"
            await expect_error(srv.port, "", [], "stream=ID")
            await expect_error(srv.port, "bad%20id", [], "stream=ID")
            # once ended, the ID can be used again
            got = await ingest(srv.port, "dup", signal(1, 4))
            assert got[-1]["type"] == "end"
    run(main())


def test_idle_stream_times_out():
    async def main():
        async with make_server(idle_timeout=0.5) as srv:
            got = await expect_error(srv.port, "quiet", [START], "no audio for 0.5 s")
            assert got[0]["type"] == "hello" and got[-1]["type"] == "end"
            await expect_error(srv.port, "silent", [], "no start message")
    run(main())


def test_send_and_listen_clients(tmp_path):
    from streamer.client import listen, send_file

    y = signal(9, 6)
    path = tmp_path / "call.wav"
    sf.write(path, y, RATE)

    async def main():
        async with make_server() as srv:
            url = f"ws://127.0.0.1:{srv.port}"
            out = io.StringIO()
            msgs = await send_file(str(path), f"{url}/ingest?stream=c1", encoding="alaw", out=out)
            assert msgs[0]["type"] == "hello" and msgs[-1]["type"] == "end"
            assert out.getvalue().count("\n") == len(msgs)
            assert close_enough(strip(msgs), offline(y, "alaw"))
            # resample on the way (16 kHz to 8 kHz telephone rate)
            msgs16 = await send_file(str(path), f"{url}/ingest?stream=c2", rate=16000)
            assert msgs16[0]["input_rate"] == 16000
            # listen replays the finished stream and stops at its end
            lines = io.StringIO()
            assert await listen(f"{url}/ws?stream=c1", lines, "jsonl") == 0
            got = [json.loads(s) for s in lines.getvalue().splitlines()]
            assert got == msgs
            lines = io.StringIO()
            assert await listen(f"{url}/ws?stream=c1", lines, "text", since=3) == 0
            text = lines.getvalue().splitlines()
            assert text[0].startswith("# ingest:c1") and text[-1] == "# end" and len(text) == len(msgs) - 3
            with pytest.raises(ProtocolError, match="in use|no stream"):
                await listen(f"{url}/ws?stream=nothing", io.StringIO())
    run(main())


def test_listen_reconnects_and_resumes_without_loss_or_repeats():
    from streamer.client import listen

    async def main():
        async with make_server() as srv:
            stream = srv.hub.create("main", {"labels": LABELS})
            out = io.StringIO()
            task = asyncio.ensure_future(listen(f"ws://127.0.0.1:{srv.port}/ws", out, "jsonl"))
            for i in range(40):
                stream.publish({"type": "window", "start": float(i), "end": i + 1.0, "channel": 0,
                                "speech": False, "label": None, "confidence": None, "probs": None})
                await asyncio.sleep(0.005)
                if i in (10, 25):  # cut every connection mid-stream
                    for sub in list(stream.subscribers):
                        sub.drop("test: connection cut")
            stream.end()
            assert await asyncio.wait_for(task, 20) == 0
            seqs = [json.loads(s).get("seq") for s in out.getvalue().splitlines()]
            assert seqs == [None] + list(range(1, 42))
    run(main())


def test_send_refused_without_token(tmp_path):
    from streamer.client import send_file

    path = tmp_path / "x.wav"
    sf.write(path, signal(0, 1), RATE)

    async def main():
        srv = EmoServer(ServerConfig(port=0, token="t0k"), pipeline_factory=factory())
        async with srv:
            with pytest.raises(ProtocolError, match="401"):
                await send_file(str(path), f"ws://127.0.0.1:{srv.port}/ingest?stream=x")
            msgs = await send_file(str(path), f"ws://127.0.0.1:{srv.port}/ingest?stream=x", token="t0k")
            assert msgs[-1]["type"] == "end"
    run(main())


def test_listen_follows_a_restarted_server_from_the_start():
    from streamer.client import listen

    def window(i):
        return {"type": "window", "start": float(i), "end": i + 1.0, "channel": 0, "speech": False,
                "label": None, "confidence": None, "probs": None}

    async def main():
        first = make_server()
        await first.start()
        port = first.port
        a = first.hub.create("main", {"labels": LABELS})
        for i in range(5):
            a.publish(window(i))
        out = io.StringIO()
        task = asyncio.ensure_future(listen(f"ws://127.0.0.1:{port}/ws", out, "jsonl"))
        while out.getvalue().count("\n") < 6:
            await asyncio.sleep(0.02)
        await first.close()
        second = EmoServer(ServerConfig(port=port), pipeline_factory=factory())
        await second.start()
        await asyncio.sleep(0.01)  # a new stream (its own start time), numbered from 1 again
        b = second.hub.create("main", {"labels": LABELS})
        for i in range(3):
            b.publish(window(100 + i))
        b.end()
        assert await asyncio.wait_for(task, 20) == 0
        await second.close()
        msgs = [json.loads(s) for s in out.getvalue().splitlines()]
        assert [(m["type"], m.get("seq")) for m in msgs] == \
            [("hello", None)] + [("window", i) for i in range(1, 6)] + \
            [("window", 1), ("window", 2), ("window", 3), ("end", 4)]
    run(main())
