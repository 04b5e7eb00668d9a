"""POST /label (streamer/server/uploads.py and the HTTP side of the connection) on a real loopback
server: raw and multipart uploads, limits, bad audio, Expect: 100-continue, slow and abandoned bodies."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
import soundfile as sf
from serverkit import http, make_server, run


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
