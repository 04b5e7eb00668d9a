"""Access logs: one line per HTTP request and WebSocket connection (client, path without the token,
status or close code, duration), as text or JSON, at the chosen level; and `serve --log-format json`."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re

import numpy as np
import pytest
import soundfile as sf
from serverkit import LABELS, http, make_server, run, send_stream
from websockets.asyncio.client import connect

from streamer.errors import UsageError
from streamer.server.auth import redact
from streamer.server.logs import configure


@pytest.fixture
def logs():
    """configure() into a buffer; the emostream logger is put back afterwards."""
    loggers = [logging.getLogger(n) for n in ("emostream", "websockets", "asyncio")]
    saved = [(list(lg.handlers), lg.level, lg.propagate) for lg in loggers]

    def start(fmt: str = "json", level: str = "info") -> io.StringIO:
        buf = io.StringIO()
        configure(fmt, level, stream=buf)
        return buf
    yield start
    for lg, (handlers, level, propagate) in zip(loggers, saved):
        lg.handlers[:], lg.level, lg.propagate = handlers, level, propagate


def access_lines(buf: io.StringIO) -> list[dict]:
    return [m for m in map(json.loads, buf.getvalue().splitlines()) if m["logger"] == "emostream.access"]


def test_redact_drops_only_the_token():
    assert redact("/ws?stream=a&token=s3cret&since=4") == "/ws?stream=a&since=4"
    assert redact("/metrics?token=s3cret") == "/metrics"
    assert redact("/streams?all=1") == "/streams?all=1"


def test_one_json_line_per_request_and_connection(logs, tmp_path):
    buf = logs("json")
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(8000), 8000)

    async def main():
        async with make_server(token="s3cret") as srv:
            base = f"http://127.0.0.1:{srv.port}"
            srv.hub.create("main", {"labels": LABELS})
            assert (await asyncio.to_thread(http, f"{base}/streams?token=s3cret"))[0] == 200
            assert (await asyncio.to_thread(http, f"{base}/streams"))[0] == 401
            assert (await asyncio.to_thread(http, f"{base}/label?token=s3cret&filename=a.wav",
                                            wav.read_bytes()))[0] == 200
            async with connect(f"ws://127.0.0.1:{srv.port}/ws?token=s3cret") as ws:
                await ws.recv()
            async with connect(f"ws://127.0.0.1:{srv.port}/ws?stream=nope&token=s3cret") as ws:
                await ws.recv()
            await send_stream(srv.port, "c1", 2, token="s3cret")
            for _ in range(100):  # the server logs a connection once its side is done
                if len(access_lines(buf)) >= 6:
                    break
                await asyncio.sleep(0.02)
    run(main())
    lines = access_lines(buf)
    assert "s3cret" not in buf.getvalue()
    got = [(m["method"], m["path"], m.get("status"), m.get("close_code")) for m in lines]
    assert sorted(got, key=str) == sorted([
        ("GET", "/streams", 200, None), ("GET", "/streams", 401, None), ("POST", "/label?filename=a.wav", 200, None),
        ("GET", "/ws", None, 1000), ("GET", "/ws?stream=nope", None, 1008), ("GET", "/ingest?stream=c1", None, 1000),
    ], key=str)
    for m in lines:
        assert re.fullmatch(r"127\.0\.0\.1:\d+", m["client"]) and 0 <= m["duration_s"] < 60
        assert m["level"] == "info" and isinstance(m["ts"], float) and m["message"].startswith(m["client"])


def test_text_format_and_level(logs):
    buf = logs("text", "info")

    async def main():
        async with make_server() as srv:
            await asyncio.to_thread(http, f"http://127.0.0.1:{srv.port}/health")
    run(main())
    line = buf.getvalue().strip()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO emostream\.access "
                        r"127\.0\.0\.1:\d+ GET /health 200 \d+\.\dms", line), line

    buf = logs("text", "warning")

    async def quiet():
        async with make_server() as srv:
            await asyncio.to_thread(http, f"http://127.0.0.1:{srv.port}/health")
    run(quiet())
    assert buf.getvalue() == ""


def test_library_warnings_share_the_format(logs):
    buf = logs("json", "info")
    logging.getLogger("websockets.server").info("opening handshake failed")  # below warning: left out
    logging.getLogger("asyncio").error("Task exception was never retrieved")
    lines = [json.loads(s) for s in buf.getvalue().splitlines()]
    assert [(m["logger"], m["level"], m["message"]) for m in lines] == \
        [("asyncio", "error", "Task exception was never retrieved")]


def test_bad_log_options():
    with pytest.raises(UsageError, match="log format"):
        configure("xml")
    with pytest.raises(UsageError, match="log level"):
        configure("json", "loud")


def test_cli_serve_json_logs_health_and_metrics():
    import os
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "streamer", "serve", "--port", "0", "--log-format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()
        assert line.startswith("emostream: serving http://127.0.0.1:"), proc.stderr.read() if not line else line
        base = line.split()[-1].rstrip("/")
        code, _, body = http(f"{base}/health")
        assert code == 200 and json.loads(body)["status"] == "ok"
        code, _, body = http(f"{base}/metrics")
        assert code == 200 and b"emostream_windows_total 0.0" in body
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    records = [json.loads(s) for s in err.splitlines() if s.startswith("{")]
    assert [(r["path"], r["status"]) for r in records] == [("/health", 200), ("/metrics", 200)]
