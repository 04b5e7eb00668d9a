"""The live server over real loopback connections: subscribers, resume, slow and hostile clients,
tokens and origins, the page, uploads. A fake pipeline keeps these tests independent of the model."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
import soundfile as sf
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from serverkit import LABELS, FakePipeline, http, make_server, recv_until_seq, run, win
from streamer.errors import UsageError
from streamer.server import EmoServer, ServerConfig, is_loopback


# -- subscribers -----------------------------------------------------------------------------

def test_several_subscribers_get_every_message_in_order():
    async def main():
        async with make_server() as srv:
            stream = srv.hub.create("main", {"labels": LABELS, "source": "test"})
            url = f"ws://127.0.0.1:{srv.port}/ws"
            clients = [await connect(url) for _ in range(5)]
            for c in clients:
                assert json.loads(await c.recv())["type"] == "hello"
            for i in range(200):
                stream.publish(win(i))
                if i % 50 == 0:
                    await asyncio.sleep(0)
            stream.end()
            for c in clients:
                msgs = await recv_until_seq(c, 201)
                assert [m["seq"] for m in msgs] == list(range(1, 202))
                assert msgs[-1] == {"type": "end", "seq": 201}
                assert [m["start"] for m in msgs[:-1]] == [float(i) for i in range(200)]
                await c.close()
    run(main())


def test_resume_after_disconnect_loses_and_repeats_nothing():
    async def main():
        async with make_server() as srv:
            stream = srv.hub.create("main", {"labels": LABELS})
            url = f"ws://127.0.0.1:{srv.port}/ws"
            seen = []
            ws = await connect(url)
            await ws.recv()  # hello
            for i in range(30):
                stream.publish(win(i))
            while len(seen) < 12:
                seen.append(json.loads(await ws.recv())["seq"])
            ws.transport.abort()  # the connection drops mid-stream
            for i in range(30, 60):
                stream.publish(win(i))
            async with connect(f"{url}?since={seen[-1]}") as ws2:
                assert json.loads(await ws2.recv())["type"] == "hello"
                for i in range(60, 70):
                    stream.publish(win(i))
                stream.end()
                seen += [m["seq"] for m in await recv_until_seq(ws2, 71)]
            assert seen == list(range(1, 72))
    run(main())


def test_late_subscriber_after_end_gets_the_whole_timeline_and_connection_stays_open():
    async def main():
        async with make_server() as srv:
            stream = srv.hub.create("main", {"labels": LABELS})
            for i in range(10):
                stream.publish(win(i))
            stream.end()
            async with connect(f"ws://127.0.0.1:{srv.port}/ws") as ws:
                msgs = [json.loads(await ws.recv()) for _ in range(12)]
                assert [m["type"] for m in msgs] == ["hello"] + ["window"] * 10 + ["end"]
                with pytest.raises(asyncio.TimeoutError):  # nothing more, but not closed either
                    await asyncio.wait_for(ws.recv(), 0.3)
    run(main())


def test_slow_subscriber_is_dropped_without_holding_back_others():
    async def main():
        async with make_server(max_queue=64, drop_grace=0.5) as srv:
            stream = srv.hub.create("main", {"labels": LABELS})
            url = f"ws://127.0.0.1:{srv.port}/ws"
            # a stuck client: its library stops reading after a few messages, so TCP fills up
            stuck = await connect(url, max_queue=1)
            fast = [await connect(url) for _ in range(3)]
            await asyncio.sleep(0.1)
            n = 3000
            big = {"calm": 0.5, "pad": "x" * 2000}
            received = {id(c): 0 for c in fast}

            async def reader(c):
                while True:
                    m = json.loads(await c.recv())
                    if m.get("seq"):
                        received[id(c)] += 1
                    if m.get("seq") == n:
                        return time.perf_counter()
            readers = [asyncio.ensure_future(reader(c)) for c in fast]
            t0 = time.perf_counter()
            for i in range(n):
                stream.publish({**win(i), "probs": big})
                if i % 20 == 0:
                    await asyncio.sleep(0.001)
            t_pub = time.perf_counter() - t0
            ends = await asyncio.wait_for(asyncio.gather(*readers), 20)
            assert all(v == n for v in received.values())
            assert max(ends) - t0 < t_pub + 5
            assert len(stream.subscribers) == 3  # the stuck one was dropped
            # the stuck client finds an error (or an aborted connection) at the end of its backlog
            last = None
            try:
                while True:
                    last = json.loads(await asyncio.wait_for(stuck.recv(), 5))
            except ConnectionClosed:
                pass
            assert last is None or last["type"] == "error" or last.get("seq", 0) < n
            for c in fast:
                await c.close()
    run(main())


# -- hostile clients -------------------------------------------------------------------------

@pytest.mark.parametrize("payload,match", [
    ("this is not json", "valid JSON"),
    (b"\x00\x01binary", "binary"),
    ('{"type":"subscribe"}', "unexpected message"),
    (b"\x00" * (2 << 20), "binary"),                  # a 2 MB binary frame
    ("[" * (2 << 20), "too large"),                   # a 2 MB text frame
])
def test_hostile_subscriber_gets_error_then_close_and_others_carry_on(payload, match):
    async def main():
        async with make_server() as srv:
            stream = srv.hub.create("main", {"labels": LABELS})
            url = f"ws://127.0.0.1:{srv.port}/ws"
            good = await connect(url)
            await good.recv()
            async with connect(url, max_size=None) as bad:
                await bad.recv()  # hello
                await bad.send(payload)
                err = json.loads(await bad.recv())
                assert err["type"] == "error" and match in err["message"]
                with pytest.raises(ConnectionClosed):
                    await bad.recv()
                assert bad.close_code == 1008
            stream.publish(win(0))
            assert json.loads(await good.recv())["seq"] == 1
            await good.close()
    run(main())


def test_garbage_bytes_and_bad_requests_do_not_hurt_the_server():
    async def main():
        async with make_server(open_timeout=0.5) as srv:
            port = srv.port
            for junk in (b"\x16\x03\x01\x02\x00garbage\r\n\r\n", b"GARBAGE\r\n\r\n", b"GET /ws HTTP/1.1\r\n\r\n",
                         b"GET", b""):
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(junk)
                await w.drain()
                data = await asyncio.wait_for(r.read(), 5)  # the server answers or closes
                assert data == b"" or data.startswith(b"HTTP/1.1 4")
                w.close()
            srv.hub.create("main", {"labels": LABELS})
            async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
                assert json.loads(await ws.recv())["type"] == "hello"
    run(main())


def test_bad_since_and_unknown_stream():
    async def main():
        async with make_server() as srv:
            for q, match in (("?since=abc", "integer"), ("?since=-3", "0 or more"), ("?stream=nope", "no stream")):
                async with connect(f"ws://127.0.0.1:{srv.port}/ws{q}") as ws:
                    err = json.loads(await ws.recv())
                    assert err["type"] == "error" and match in err["message"]
    run(main())


# -- token, origin, host ---------------------------------------------------------------------

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


def test_port_in_use_is_a_usage_error():
    async def main():
        async with make_server() as srv:
            with pytest.raises(UsageError, match="in use"):
                await EmoServer(ServerConfig(port=srv.port)).start()
    run(main())


# -- page, streams list, uploads -------------------------------------------------------------

def test_page_and_static_files(tmp_path):
    (tmp_path / "index.html").write_text("<!doctype html><title>emostream</title>")
    (tmp_path / "app.js").write_text("console.log(1)")

    async def main():
        async with make_server(web_dir=tmp_path) as srv:
            base = f"http://127.0.0.1:{srv.port}"
            code, ctype, body = await asyncio.to_thread(http, base + "/")
            assert code == 200 and ctype.startswith("text/html") and b"emostream" in body
            code, ctype, _ = await asyncio.to_thread(http, base + "/app.js")
            assert code == 200 and "javascript" in ctype
            for path in ("/../server.py", "/nothing.html", "/.hidden.js", "/x.py"):
                code, ctype, body = await asyncio.to_thread(http, base + path)
                assert code == 404 and ctype == "application/json" and "error" in json.loads(body)
            code, _, _ = await asyncio.to_thread(http, base + "/ws")
            assert code == 426
    run(main())


def test_shipped_page_is_served():
    from streamer.server import WEB_DIR
    assert (WEB_DIR / "index.html").exists()

    async def main():
        async with make_server() as srv:
            code, ctype, body = await asyncio.to_thread(http, f"http://127.0.0.1:{srv.port}/")
            assert code == 200 and ctype.startswith("text/html") and body == (WEB_DIR / "index.html").read_bytes()
    run(main())


def test_streams_lists_live_streams():
    async def main():
        async with make_server() as srv:
            a = srv.hub.create("a", {"labels": LABELS, "channels": ["mix"]}, kind="ingest")
            a.publish({**win(0), "label": "angry"})
            b = srv.hub.create("b", {"labels": LABELS}, kind="ingest")
            b.end()
            code, ctype, body = await asyncio.to_thread(http, f"http://127.0.0.1:{srv.port}/streams")
            rows = json.loads(body)
            assert code == 200 and ctype == "application/json"
            assert [r["id"] for r in rows] == ["a"]
            assert rows[0]["current"][0]["label"] == "angry" and rows[0]["started"] <= time.time()
            rows = json.loads((await asyncio.to_thread(http, f"http://127.0.0.1:{srv.port}/streams?all=1"))[2])
            assert sorted(r["id"] for r in rows) == ["a", "b"]
    run(main())


def _wav_bytes(tmp_path, seconds=1.0, sr=16000):
    p = tmp_path / "tone.wav"
    t = np.arange(int(seconds * sr)) / sr
    sf.write(p, 0.3 * np.sin(2 * np.pi * 220 * t), sr)
    return p.read_bytes()


def _multipart(name, data, boundary="----emostreamtest"):
    return boundary, (f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n"
                      f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                      "Content-Type: audio/wav\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()


def test_uploads(tmp_path):
    wav = _wav_bytes(tmp_path)

    async def main():
        async with make_server(max_upload=200_000) as srv:
            url = f"http://127.0.0.1:{srv.port}/label"
            code, ctype, body = await asyncio.to_thread(http, url + "?filename=call.wav", wav)
            assert code == 200 and ctype == "application/json"
            obj = json.loads(body)
            assert obj["source"] == "call.wav" and obj["duration"] == pytest.approx(1.0)
            boundary, form = _multipart("clip.wav", wav)
            code, _, body = await asyncio.to_thread(
                http, url, form, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
            assert code == 200 and json.loads(body)["source"] == "clip.wav"
            code, _, body = await asyncio.to_thread(http, url, b"x" * 300_000)
            assert code == 413 and "larger than the limit" in json.loads(body)["error"]
            code, _, body = await asyncio.to_thread(http, url + "?filename=notes.txt", b"hello, this is not audio" * 50)
            assert code == 415 and "error" in json.loads(body)
            assert "emostream-upload" not in json.loads(body)["error"]  # no temp paths leak out
            code, _, body = await asyncio.to_thread(http, url, wav[:30])  # a truncated WAV header
            assert 400 <= code < 500
            code, _, body = await asyncio.to_thread(http, url, b"", None, "POST")
            assert code == 400 and "empty" in json.loads(body)["error"]
            code, _, _ = await asyncio.to_thread(http, url)  # GET
            assert code == 405
            code, _, _ = await asyncio.to_thread(http, f"http://127.0.0.1:{srv.port}/other", b"x")
            assert code == 404
    run(main())


def test_upload_with_expect_continue_over_a_raw_socket(tmp_path):
    wav = _wav_bytes(tmp_path, 0.5)

    async def main():
        async with make_server() as srv:
            r, w = await asyncio.open_connection("127.0.0.1", srv.port)
            w.write(f"POST /label HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(wav)}\r\n"
                    "Expect: 100-continue\r\n\r\n".encode())
            await w.drain()
            assert (await r.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100")
            w.write(wav)
            await w.drain()
            resp = await asyncio.wait_for(r.read(), 10)
            assert resp.startswith(b"HTTP/1.1 200") and b'"duration": 0.5' in resp
            w.close()
    run(main())


def test_close_during_an_upload_and_slow_upload_timeout():
    async def main():
        srv = make_server(idle_timeout=0.5)
        await srv.start()
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        w.write(b"POST /label HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n0123456789")
        await w.drain()
        resp = await asyncio.wait_for(r.read(), 5)  # the body stalls: 408 after the idle timeout
        assert resp.startswith(b"HTTP/1.1 408")
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        w.write(b"POST /label HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n0123")
        await w.drain()
        await asyncio.sleep(0.1)
        t0 = time.perf_counter()
        await srv.close()
        assert time.perf_counter() - t0 < 3
        w.close()
    run(main())


# -- sources ---------------------------------------------------------------------------------

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


def test_close_with_connected_clients_is_quick():
    async def main():
        srv = make_server()
        await srv.start()
        srv.hub.create("main", {"labels": LABELS})
        clients = [await connect(f"ws://127.0.0.1:{srv.port}/ws") for _ in range(20)]
        t0 = time.perf_counter()
        await srv.close()
        assert time.perf_counter() - t0 < 3
        for c in clients:
            await c.close()
        await srv.close()  # twice is fine
    run(main())


# -- the command line, end to end with the shipped model -------------------------------------

def _shipped_model_or_skip():
    from streamer.config import load_meta
    from streamer.errors import ModelError
    try:
        load_meta()
    except ModelError as exc:
        pytest.skip(f"no shipped model: {exc}")


def _start_cli(*argv):
    import os
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-m", "streamer", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise AssertionError(proc.stderr.read())
    return proc, line


def test_cli_serve_ingest_send_listen_label_and_ctrl_c(tmp_path):
    import signal
    import subprocess
    import sys
    _shipped_model_or_skip()
    rec = tmp_path / "rec.jsonl"
    proc, line = _start_cli("serve", "--port", "0", "--record", str(rec), "--channels", "split",
                            "--channel-names", "agent,customer")
    try:
        assert line.startswith("emostream: serving http://127.0.0.1:")
        base = line.split()[-1].rstrip("/")
        ws = base.replace("http", "ws", 1)
        wav = tmp_path / "call.wav"
        y, sr = sf.read("streamer/examples/conversation.flac", dtype="float32", frames=16000 * 8)
        sf.write(wav, np.stack([y, y[::-1]], axis=1), sr)
        out = subprocess.run([sys.executable, "-m", "streamer", "send", str(wav), f"{ws}/ingest?stream=c1",
                              "--rate", "8000", "--encoding", "mulaw"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert "agent,customer" in lines[0] and lines[-1] == "# end"
        assert any(" agent " in s for s in lines) and any(" customer " in s for s in lines)
        out = subprocess.run([sys.executable, "-m", "streamer", "listen", f"{ws}/ws?stream=c1", "-f", "jsonl"],
                             capture_output=True, text=True, timeout=60)
        msgs = [json.loads(s) for s in out.stdout.splitlines()]
        assert out.returncode == 0 and msgs[0]["type"] == "hello" and msgs[-1]["type"] == "end"
        assert [m["seq"] for m in msgs[1:]] == list(range(1, len(msgs)))
        code, _, body = http(f"{base}/label?filename=clip.flac",
                             _read_bytes("streamer/examples/conversation.flac"))
        obj = json.loads(body)
        assert code == 200 and obj["source"] == "clip.flac" and obj["windows"] and obj["segments"]
        assert set(obj) >= {"source", "duration", "sample_rate", "model", "windows", "segments"}
        code, _, body = http(f"{base}/label", b"definitely not audio" * 100)
        assert code == 415 and "error" in json.loads(body)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        assert len(rec.read_text().splitlines()) == len(msgs)
    finally:
        if proc.poll() is None:
            proc.kill()


def _read_bytes(p):
    with open(p, "rb") as fh:
        return fh.read()


def test_cli_demo_prints_the_address_and_stops_after_seconds():
    _shipped_model_or_skip()
    proc, line = _start_cli("demo", "--port", "0", "--fast", "--seconds", "1")
    try:
        assert line.startswith("emostream demo: open http://127.0.0.1:") and line.rstrip().endswith("/ in a browser")
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cli_errors_are_one_line():
    import subprocess
    import sys
    for argv, code in ((["serve", "--host", "0.0.0.0", "--port", "0"], 64),
                       (["serve", "--file", "/nonexistent.wav"], 2),
                       (["listen", "http://x/ws"], 64),
                       (["send", "x.wav", "ws://127.0.0.1:1/ingest"], 64),
                       (["listen", "ws://127.0.0.1:1/ws"], 5)):
        out = subprocess.run([sys.executable, "-m", "streamer", *argv], capture_output=True, text=True, timeout=60)
        assert out.returncode == code, (argv, out.stderr)
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("emostream: error:"), out.stderr
