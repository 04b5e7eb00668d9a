"""Issue 16, HTTP: ambiguous or malformed requests are 400s, DNS rebinding is refused, tokens that
guard nothing are refused, uploads are bounded in time, memory, duration and concurrency."""

from __future__ import annotations

import asyncio
import io
import json
import os
import tempfile
import threading

import numpy as np
import pytest
import soundfile as sf
from serverkit import check_audio_labeler, make_server, run
from websockets.asyncio.client import connect
from websockets.datastructures import Headers

from streamer.errors import UsageError
from streamer.server import EmoServer, ServerConfig
from streamer.server import uploads as uploads_mod
from streamer.server.uploads import extract_upload, upload_payload


async def raw(port: int, data: bytes, wait: float = 10.0) -> bytes:
    """Send raw bytes, return everything the server answers until it closes."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(data)
        await w.drain()
        return await asyncio.wait_for(r.read(), wait)
    finally:
        w.close()


def status(resp: bytes) -> int:
    assert resp.startswith(b"HTTP/1.1 "), resp[:80]
    return int(resp[9:12])


def wav_bytes(seconds: float = 1.0, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(np.arange(int(seconds * rate)) * 0.3)).astype(np.float32), rate, format="WAV")
    return buf.getvalue()


BAD_REQUESTS = [
    b"GET /a\x00.html HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET /\xff.html HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET /\x1b[2J HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET /streams HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://127.0.0.1\r\nOrigin: http://evil\r\n\r\n",
    b"GET /streams HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Origin: http://127.0.0.1\r\nOrigin: http://evil\r\n\r\n",
    b"POST /label HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
    b"POST /label HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: +3\r\n\r\nabc",
    b"POST /label HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1_0\r\n\r\nabc",
    b"POST /l\x00abel HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n\r\nabc",
    b"POST /label HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: a\r\nOrigin: b\r\nContent-Length: 3\r\n\r\nabc",
]


def test_ambiguous_and_malformed_requests_are_400():
    async def main():
        async with make_server() as srv:
            for req in BAD_REQUESTS:
                resp = await raw(srv.port, req)
                assert status(resp) == 400, (req, resp[:200])
                body = json.loads(resp.partition(b"\r\n\r\n")[2])
                assert body["status"] == 400 and "Traceback" not in body["error"]
            ok = await raw(srv.port, b"GET /streams HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert status(ok) == 200
    run(main())


def test_dns_rebinding_is_refused_without_a_token():
    async def main():
        async with make_server() as srv:
            p = srv.port
            evil = f"Host: evil.example:{p}\r\nOrigin: http://evil.example:{p}\r\n".encode()
            assert status(await raw(p, b"GET /streams HTTP/1.1\r\n" + evil + b"\r\n")) == 403
            assert status(await raw(p, b"GET / HTTP/1.1\r\n" + evil + b"\r\n")) == 403
            wav = wav_bytes()
            resp = await raw(p, b"POST /label HTTP/1.1\r\n" + evil
                             + f"Content-Length: {len(wav)}\r\n\r\n".encode() + wav)
            assert status(resp) == 403
            upgrade = (b"GET /ws HTTP/1.1\r\n" + evil + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            assert status(await raw(p, upgrade)) == 403
            async with connect(f"ws://localhost:{p}/ingest?stream=fine") as ws:  # a loopback name is fine
                await ws.send('{"type":"stop"}')
            for host in (f"localhost:{p}", f"127.0.0.1:{p}", f"LOCALHOST.:{p}", f"[::1]:{p}", "127.0.0.2"):
                resp = await raw(p, f"GET /streams HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                assert status(resp) == 200, host
        # --allowed-host adds a name
        async with make_server(allowed_hosts=["calls.example"]) as srv:
            resp = await raw(srv.port, b"GET /streams HTTP/1.1\r\nHost: calls.example:1\r\n\r\n")
            assert status(resp) == 200
            resp = await raw(srv.port, b"GET /streams HTTP/1.1\r\nHost: evil.example\r\n\r\n")
            assert status(resp) == 403
    run(main())


@pytest.mark.parametrize("token,host,ok", [
    (" ", "127.0.0.1", False), ("", "127.0.0.1", True), ("\t\t", "127.0.0.1", False), ("a b" * 10, "0.0.0.0", False),
    ("short", "0.0.0.0", False), ("x" * 15, "0.0.0.0", False), ("x" * 16, "0.0.0.0", True),
    ("t0k", "127.0.0.1", True), (" " * 20, "0.0.0.0", False),
])
def test_tokens_that_guard_nothing_are_refused(token, host, ok):
    async def main():
        srv = EmoServer(ServerConfig(host=host, port=0, token=token or None))
        try:
            if ok:
                await srv.start()
            else:
                with pytest.raises(UsageError, match="token"):
                    await srv.start()
        finally:
            await srv.close()
    run(main())


def test_cli_refuses_a_blank_token():
    from tests.conftest import emostream

    r = emostream("serve", "--host", "0.0.0.0", "--port", "0", "--token", " ", timeout=60)
    assert r.returncode == 64 and b"--token" in r.stderr and r.stderr.count(b"\n") == 1


@pytest.mark.slow
def test_slow_upload_hits_the_total_deadline():
    async def main():
        async with make_server(idle_timeout=2.0, upload_timeout=2.5) as srv:
            r, w = await asyncio.open_connection("127.0.0.1", srv.port)
            w.write(b"POST /label HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n")
            t0 = asyncio.get_running_loop().time()
            got = b""
            for _ in range(40):  # one byte every 0.3 s: never idle for 2 s
                try:
                    w.write(b"x")
                    await w.drain()
                except ConnectionError:
                    break
                try:
                    got += await asyncio.wait_for(r.read(4096), 0.3)
                except asyncio.TimeoutError:
                    continue
                if got:
                    break
            elapsed = asyncio.get_running_loop().time() - t0
            w.close()
            assert status(got) == 408 and b"longer than 2.5 s" in got
            assert elapsed < 8
    run(main())


def test_uploads_spool_to_disk_and_leave_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    tempfile.tempdir = None  # re-read TMPDIR
    try:
        async def main():
            async with make_server() as srv:
                big = wav_bytes(seconds=20)  # 640 KB: above the in-memory limit
                for body, ctype in ((big, None), (b"--b\r\nContent-Disposition: form-data; name=\"file\"; "
                                                 b"filename=\"a.wav\"\r\n\r\n" + big + b"\r\n--b--\r\n",
                                                 "multipart/form-data; boundary=b")):
                    head = f"POST /label?filename=x.wav HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
                    if ctype:
                        head += f"Content-Type: {ctype}\r\n"
                    resp = await raw(srv.port, head.encode() + b"\r\n" + body, wait=60)
                    assert status(resp) == 200, resp[:300]
                    assert json.loads(resp.partition(b"\r\n\r\n")[2])["duration"] == pytest.approx(20.0)
            assert not [n for n in os.listdir(tmp_path) if n.startswith("emostream-")]
        run(main())
    finally:
        tempfile.tempdir = None


def test_long_recordings_are_refused_before_labelling():
    calls = []

    def labeler(path, name):
        calls.append(name)
        return check_audio_labeler(path, name)

    async def main():
        srv = EmoServer(ServerConfig(port=0, max_upload_seconds=5), labeler=labeler)
        async with srv:
            wav = wav_bytes(seconds=10)
            resp = await raw(srv.port, f"POST /label?filename=long.wav HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                       f"Content-Length: {len(wav)}\r\n\r\n".encode() + wav)
            assert status(resp) == 413 and b"long.wav" in resp and b"--max-upload-seconds" in resp
            wav = wav_bytes(seconds=3)
            resp = await raw(srv.port, f"POST /label HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                       f"Content-Length: {len(wav)}\r\n\r\n".encode() + wav)
            assert status(resp) == 200
        assert calls == ["upload"]
    run(main())


def _blocking_labeler():
    """A labeler that holds its slot until released: (labeler, started, release)."""
    release = threading.Event()
    started = threading.Event()

    def slow(path, name):
        started.set()
        release.wait(30)
        return check_audio_labeler(path, name)

    return slow, started, release


def test_a_full_upload_queue_answers_503_with_retry_after():
    slow, started, release = _blocking_labeler()

    async def main():
        srv = EmoServer(ServerConfig(port=0, label_jobs=1, upload_queue=1), labeler=slow)
        async with srv:
            wav = wav_bytes()
            req = (f"POST /label HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(wav)}\r\n\r\n".encode() + wav)
            first = asyncio.ensure_future(raw(srv.port, req, wait=60))
            await asyncio.to_thread(started.wait, 10)
            second = asyncio.ensure_future(raw(srv.port, req, wait=60))  # waits in the queue
            for _ in range(100):
                if srv.uploads.pending == 2:
                    break
                await asyncio.sleep(0.05)
            third = await raw(srv.port, req)
            assert status(third) == 503 and b"\r\nRetry-After: " in third
            release.set()
            assert status(await first) == 200 and status(await second) == 200
    run(main())


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64, 1 << 20])
def test_multipart_extraction_across_block_boundaries(monkeypatch, block):
    monkeypatch.setattr(uploads_mod, "_BLOCK", block)
    payload = bytes(range(256)) * 3 + b"\r\n--bo" + b"\r\n-" + b"tail"
    body = (b"preamble\r\n--bound\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
            b"--bound\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../x/call.wav\"\r\n"
            b"Content-Type: audio/wav\r\n\r\n" + payload + b"\r\n--bound--\r\n")
    headers = Headers([("Content-Type", "multipart/form-data; boundary=bound")])
    out = io.BytesIO()
    assert extract_upload(headers, io.BytesIO(body), out, "") == "call.wav"
    assert out.getvalue() == payload
    assert upload_payload(headers, body, "") == (payload, "call.wav")
    # a part named "file" without a filename is the fallback
    body2 = b"--bound\r\nContent-Disposition: form-data; name=\"audio\"\r\n\r\n" + payload + b"\r\n--bound--\r\n"
    assert upload_payload(headers, body2, "") == (payload, "upload")


def test_deeply_nested_render_body_is_400():
    async def main():
        async with make_server() as srv:
            body = b"[" * 200_000 + b"]" * 200_000
            resp = await raw(srv.port, f"POST /render?format=csv HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                       f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            assert status(resp) == 400
    run(main())


def test_a_client_that_leaves_does_not_free_its_labelling_slot():
    slow, started, release = _blocking_labeler()

    async def main():
        srv = EmoServer(ServerConfig(port=0, label_jobs=1, upload_queue=0), labeler=slow)
        async with srv:
            wav = wav_bytes()
            req = (f"POST /label HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(wav)}\r\n\r\n".encode() + wav)
            r, w = await asyncio.open_connection("127.0.0.1", srv.port)
            w.write(req)
            await w.drain()
            await asyncio.to_thread(started.wait, 10)
            w.close()  # the client goes while its upload is labelled
            await asyncio.sleep(0.5)
            assert status(await raw(srv.port, req)) == 503  # the slot is still taken
            release.set()
            for _ in range(100):
                if srv.uploads.pending == 0:
                    break
                await asyncio.sleep(0.05)
            assert status(await raw(srv.port, req, wait=30)) == 200
    run(main())
