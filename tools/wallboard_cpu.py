"""The wallboard's CPU with many live calls: a real `emostream serve`, N real-time ingest calls
(8 kHz mu-law, stereo: agent and customer taking turns, alerts on the customer), and the wallboard page in
headless Chromium; the page's main-thread time is read through the DevTools protocol
(``Performance.getMetrics``: TaskDuration, ScriptDuration, LayoutDuration, RecalcStyleDuration) at
the start and the end of the measured stretch, plus the CPU time of Chromium's renderer processes.

    python -m tools.wallboard_cpu --calls 100 --seconds 60 [--mono] [--json out.json]
    python -m tools.wallboard_cpu --calls 100 --seconds 60 --synthetic

A 2-core machine cannot analyse 100 real-time calls and run the browser at once, so the server
falls behind and the page gets fewer messages than 100 real calls send. ``--synthetic`` measures the
page alone at the full rate: a stand-in server (the page's files, and ``/ws?streams=all`` sending
what 100 real-time calls would: per call and channel a window every second, a segment every 4 s, an
alert now and then, in the server's message format) instead of `emostream serve` and the calls.

CPU figures are shares of one core. The calls loop the bundled example conversation in turns (each
call from another point of it), so alerts keep firing on some calls while others stay calm.
Needs Chromium (EMOSTREAM_CHROMIUM, default /usr/bin/chromium) and Playwright for Python.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "streamer" / "examples" / "conversation.flac"
CHROMIUM = os.environ.get("EMOSTREAM_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RATE = 8000
FRAME_S = 0.2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def conversation(rate: int = RATE) -> np.ndarray:
    """About a minute of stereo int16 at ``rate``: the bundled example conversation (a minute of varied
    emotions) cut into turns of 4 s, the turns going to the agent (left) and the customer (right) in
    turn, with the other side silent."""
    import soxr

    y, sr = sf.read(EXAMPLE, dtype="float32")
    y = y if y.ndim == 1 else y.mean(axis=1)
    y = soxr.resample(y, sr, rate).astype(np.float32)
    turn = 4 * rate
    out = np.zeros((len(y), 2), np.float32)
    for k in range(0, len(y), turn):
        out[k:k + turn, (k // turn) % 2] = y[k:k + turn]
    return (np.clip(out, -1, 1) * 32767).astype(np.int16)


async def call(url: str, audio: np.ndarray, offset: int, stop: float, sent: list[int], dropped: list[int],
               rate: int = RATE, encoding: str = "mulaw") -> None:
    """One real-time ingest call (frames of FRAME_S), looping the audio from ``offset``."""
    from websockets.asyncio.client import connect

    from streamer.codecs import encode_pcm

    n = int(rate * FRAME_S)
    enc = encode_pcm(np.roll(audio, -offset, axis=0), encoding)
    frame_bytes = n * audio.shape[1] * (1 if encoding in ("mulaw", "alaw") else 2)
    # no keepalive pings from this side: on a loaded machine a late pong would end a call
    async with connect(url, max_size=None, ping_interval=None) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": rate, "channels": int(audio.shape[1]),
                                  "encoding": encoding}))

        async def drain() -> None:
            try:
                async for _ in ws:
                    pass
            except Exception:        # the server closed a call it found idle: counted as dropped
                dropped[0] += 1

        reader = asyncio.ensure_future(drain())
        t0, k, pos = time.monotonic(), 0, 0
        while time.monotonic() < stop and not reader.done():
            if pos + frame_bytes > len(enc):
                pos = 0
            await ws.send(enc[pos:pos + frame_bytes])
            pos += frame_bytes
            k += 1
            sent[0] += n
            await asyncio.sleep(max(0.0, t0 + k * FRAME_S - time.monotonic()))
        if reader.done():
            return
        await ws.send(json.dumps({"type": "stop"}))
        try:
            await asyncio.wait_for(reader, 10)
        except asyncio.TimeoutError:
            reader.cancel()


def run_calls(port: int, token: str, calls: int, seconds: float, done: threading.Event,
              stats: dict | None = None, channels: int = 2, rate: int = RATE, encoding: str = "mulaw") -> None:
    """``calls`` real-time ingest calls for ``seconds``; ``stats`` gets samples sent and calls dropped."""
    audio = conversation(rate)
    if channels == 1:
        audio = audio.max(axis=1, keepdims=True)   # one side speaks at a time: a mono mix
    stop = time.monotonic() + seconds
    sent, dropped = [0], [0]

    async def main() -> None:
        tasks = []
        for i in range(calls):
            url = f"ws://127.0.0.1:{port}/ingest?stream=call-{i:03d}&token={token}"
            offset = (i * 7919 * rate // 100) % len(audio)
            tasks.append(asyncio.ensure_future(call(url, audio, offset, stop, sent, dropped, rate, encoding)))
            await asyncio.sleep(0.02)            # calls start over two seconds, not all at once
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())
    if stats is not None:
        stats.update(samples=sent[0], dropped=dropped[0])
    done.set()


LABELS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]


async def synthetic_feed(port: int, calls: int, channels: int, stop: threading.Event) -> None:
    """A stand-in for `emostream serve`: the page's files over HTTP and, on ``/ws?streams=all``, the
    messages of ``calls`` real-time calls (the feed's format: streams list, hellos, then windows,
    segments, alerts and ends tagged with their stream)."""
    import random
    from http import HTTPStatus

    from websockets.asyncio.server import serve
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    web = ROOT / "streamer" / "web"
    types = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
    names = ["agent", "customer"][:channels] if channels == 2 else ["mix"]

    def files(conn, request):
        path = request.path.split("?")[0]
        if path == "/ws":
            return None
        if path == "/colors.json":
            from streamer.plot import LABEL_COLOURS, SILENCE_COLOUR
            body = json.dumps({"colors": LABEL_COLOURS, "silence": SILENCE_COLOUR}).encode()
            ctype = "application/json"
        else:
            f = web / (path.lstrip("/") or "index.html")
            if f.suffix not in types or not f.is_file():
                return Response(404, "Not Found", Headers([("Content-Length", "0")]), b"")
            body, ctype = f.read_bytes(), types[f.suffix]
        return Response(200, HTTPStatus.OK.phrase, Headers([("Content-Type", ctype),
                                                              ("Content-Length", str(len(body)))]), body)

    async def feed(ws):
        rnd = random.Random(1)
        t0 = time.time()
        ids = [f"call-{i:03d}" for i in range(calls)]
        await ws.send(json.dumps({"type": "streams", "streams": [
            {"id": sid, "live": True, "started": t0, "channels": names, "current": [], "alerts": 0,
             "last_alert": None} for sid in ids]}))
        for sid in ids:
            await ws.send(json.dumps({"type": "hello", "stream": sid, "labels": LABELS, "sample_rate": 16000,
                                      "window": 3.0, "hop": 1.0, "source": f"ingest:{sid}", "channels": names,
                                      "started": t0}))
        seq = {sid: 0 for sid in ids}
        mood = {(sid, c): rnd.choice(LABELS) for sid in ids for c in range(len(names))}
        k = 0
        while not stop.is_set():
            for j, sid in enumerate(ids):       # the calls' windows spread over the second
                for c, name in enumerate(names):
                    if rnd.random() < 0.15:
                        mood[sid, c] = rnd.choice(LABELS)
                    speech = rnd.random() > 0.3
                    lb = mood[sid, c] if speech else None
                    seq[sid] += 1
                    probs = {x: round(rnd.random() / 8, 4) for x in LABELS} if speech else None
                    await ws.send(json.dumps({"stream": sid, "type": "window", "seq": seq[sid], "start": float(k),
                                              "end": k + 3.0, "channel": c, "channel_name": name, "speech": speech,
                                              "label": lb, "confidence": round(0.4 + rnd.random() / 2, 4) if speech else None,
                                              "probs": probs}))
                    if k % 4 == 3 and speech:
                        seq[sid] += 1
                        await ws.send(json.dumps({"stream": sid, "type": "segment", "seq": seq[sid], "start": k - 3.0,
                                                  "end": k + 1.0, "channel": c, "channel_name": name, "label": lb,
                                                  "confidence": 0.6}))
                    if rnd.random() < 0.004:
                        seq[sid] += 1
                        await ws.send(json.dumps({"stream": sid, "type": "alert", "seq": seq[sid], "start": k - 10.0,
                                                  "end": k + 1.0, "channel": c, "channel_name": name,
                                                  "rule": "angry>10", "label": "angry"}))
                await asyncio.sleep(max(0.0, t0 + k + (j + 1) / len(ids) - time.time()))
            k += 1

    async with serve(feed, "127.0.0.1", port, process_request=files, max_size=None):
        while not stop.is_set():
            await asyncio.sleep(0.2)


def _renderer_cpu(browser_pid: int) -> float:
    """CPU seconds of Chromium's renderer processes (children of the browser)."""
    import psutil

    total = 0.0
    for p in psutil.Process(browser_pid).children(recursive=True):
        try:
            if "--type=renderer" in " ".join(p.cmdline()):
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            pass
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.wallboard_cpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=60.0, help="the measured stretch")
    ap.add_argument("--warmup", type=float, default=15.0, help="seconds of calls before measuring")
    ap.add_argument("--mono", action="store_true", help="mono calls (one channel each) instead of stereo")
    ap.add_argument("--synthetic", action="store_true", help="a stand-in feed at the full rate, no server or calls")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = ap.parse_args(argv)

    import psutil
    from playwright.sync_api import sync_playwright

    port, token = _free_port(), "wallboard-bench"
    tmp = Path(tempfile.mkdtemp(prefix="emostream-wallboard-"))
    log = open(tmp / "server.log", "w+")
    stop = threading.Event()
    if args.synthetic:
        server = None
        threading.Thread(target=lambda: asyncio.run(synthetic_feed(port, args.calls, 1 if args.mono else 2, stop)),
                         daemon=True).start()
    else:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamer", "serve", "--port", str(port), "--token", token,
             *([] if args.mono else ["--channels", "split", "--channel-names", "agent,customer"]),
             "--alert", ("" if args.mono else "customer:") + "angry,fearful,disgust>3", "--idle-timeout", "120"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    done = threading.Event()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if (server is not None and server.poll() is not None) or time.monotonic() > deadline:
                    log.seek(0)
                    print(log.read()[-2000:], file=sys.stderr)
                    return 1
                time.sleep(0.2)
        total = args.warmup + args.seconds + 5
        stats: dict = {}
        feeder = threading.Thread(target=run_calls, args=(port, token, args.calls, total, done, stats,
                                                          1 if args.mono else 2), daemon=True)
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(str(tmp / "profile"), executable_path=CHROMIUM, args=FLAGS,
                                                        headless=True, viewport={"width": 1920, "height": 1080})
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.goto(f"http://127.0.0.1:{port}/wallboard.html?token={token}")
            page.wait_for_function("window.wallboard && window.wallboard.connection === 'live'", timeout=30000)
            if not args.synthetic:
                feeder.start()
            page.wait_for_function(f"window.wallboard.count >= {args.calls}", timeout=120000)
            time.sleep(args.warmup)
            cdp = ctx.new_cdp_session(page)
            cdp.send("Performance.enable", {"timeDomain": "threadTicks"})
            browser_pid = next(p.pid for p in psutil.Process(os.getpid()).children(recursive=True)
                               if "chrom" in p.name().lower() and "--type=" not in " ".join(p.cmdline()))

            def sample() -> dict:
                m = {x["name"]: x["value"] for x in cdp.send("Performance.getMetrics")["metrics"]}
                m["wall"] = time.monotonic()
                m["renderer_cpu"] = _renderer_cpu(browser_pid)
                m.update(page.evaluate("({messages: wallboard.messages, renders: wallboard.renders, "
                                       "cards: wallboard.cardRenders, count: wallboard.count, live: "
                                       "document.querySelectorAll('[data-testid=call][data-state=live]').length})"))
                return m

            a = sample()
            time.sleep(args.seconds)
            b = sample()
            page.screenshot(path=str(tmp / "wallboard.png"))
            ctx.close()
        wall = b["wall"] - a["wall"]
        out = {
            "calls": args.calls, "channels": 1 if args.mono else 2, "synthetic": args.synthetic,
            "seconds": round(wall, 1),
            "cards_shown": b["count"], "live_calls_at_start": a["live"], "live_calls_at_end": b["live"],
            "messages_per_s": round((b["messages"] - a["messages"]) / wall, 1),
            "card_redraws_per_s": round((b["cards"] - a["cards"]) / wall, 1),
            "main_thread_cpu": round((b["TaskDuration"] - a["TaskDuration"]) / wall, 4),
            "script_cpu": round((b["ScriptDuration"] - a["ScriptDuration"]) / wall, 4),
            "layout_style_cpu": round((b["LayoutDuration"] + b["RecalcStyleDuration"]
                                       - a["LayoutDuration"] - a["RecalcStyleDuration"]) / wall, 4),
            "renderer_processes_cpu": round((b["renderer_cpu"] - a["renderer_cpu"]) / wall, 4),
            "js_heap_mb": round(b["JSHeapUsedSize"] / 1e6, 1),
            "nodes": int(b["Nodes"]),
            "screenshot": str(tmp / "wallboard.png"),
            "load_average": os.getloadavg(),
            "cores": os.cpu_count(),
        }
        print(json.dumps(out, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        return 0
    finally:
        stop.set()
        if server is not None:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
        log.close()


if __name__ == "__main__":
    sys.exit(main())
