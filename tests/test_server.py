"""The live server over real loopback connections: subscribers, resume, slow and hostile clients,
the page and the streams list, closing, and the command line end to end. A fake pipeline keeps
these tests independent of the model (tokens and origins: test_auth.py, uploads: test_uploads.py,
sources: test_runner.py)."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
import soundfile as sf
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from serverkit import LABELS, http, make_server, recv_until_seq, run, win
from streamer.errors import UsageError
from streamer.server import EmoServer, ServerConfig


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_cli_demo_prints_the_address_and_stops_after_seconds():
    _shipped_model_or_skip()
    proc, line = _start_cli("demo", "--port", "0", "--fast", "--seconds", "1")
    try:
        assert line.startswith("emostream demo: open http://127.0.0.1:") and line.rstrip().endswith("/ in a browser")
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
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
