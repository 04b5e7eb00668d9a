"""The wallboard's CPU with many live calls: a real `emostream serve`, N real-time ingest calls
(8 kHz mu-law, stereo: agent and customer, alerts on the customer), and the wallboard page in
headless Chromium; the page's main-thread time is read through the DevTools protocol
(``Performance.getMetrics``: TaskDuration, ScriptDuration, LayoutDuration, RecalcStyleDuration) at
the start and the end of the measured stretch, plus the CPU time of Chromium's renderer processes.

    python tools/wallboard_cpu.py --calls 100 --seconds 60 [--json out.json]

CPU figures are shares of one core. The calls loop the test fixtures (angry, happy, sad clips with
pauses, each call offset in time), so alerts keep firing on some calls while others stay calm.
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
FIXTURES = ROOT / "tests" / "fixtures"
CHROMIUM = os.environ.get("EMOSTREAM_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RATE = 8000
FRAME_S = 0.1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def conversation() -> np.ndarray:
    """About 30 s of stereo 8 kHz int16: the agent (happy, calm) and the customer (angry, sad)."""
    import soxr

    def clip(name: str) -> np.ndarray:
        y, sr = sf.read(FIXTURES / name, dtype="float32")
        y = y if y.ndim == 1 else y.mean(axis=1)
        return soxr.resample(y, sr, RATE).astype(np.float32)

    pause = np.zeros(RATE // 2, np.float32)
    agent = [clip("03-01-03-02-02-01-05.flac")]
    customer = [clip("03-01-05-02-01-01-01.flac"), clip("03-01-05-02-01-01-01.flac"),
                clip("03-01-04-02-01-01-02.flac")]
    left, right = [], []
    for k, c in enumerate(customer):           # turns: agent, customer, agent, customer, ...
        a = agent[k % len(agent)]
        left += [a, pause, np.zeros(len(c), np.float32), pause]
        right += [np.zeros(len(a), np.float32), pause, c, pause]
    y = np.stack([np.concatenate(left), np.concatenate(right)], axis=1)
    return (np.clip(y, -1, 1) * 32767).astype(np.int16)


async def call(url: str, audio: np.ndarray, offset: int, stop: float, sent: list[int]) -> None:
    """One real-time ingest call (mu-law frames of FRAME_S), looping the audio from ``offset``."""
    from websockets.asyncio.client import connect

    from streamer.codecs import encode_pcm

    n = int(RATE * FRAME_S)
    enc = encode_pcm(np.roll(audio, -offset, axis=0), "mulaw")
    frame_bytes = n * 2                          # one byte per sample, two channels
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": RATE, "channels": 2, "encoding": "mulaw"}))

        async def drain() -> None:
            async for _ in ws:
                pass

        reader = asyncio.ensure_future(drain())
        t0, k, pos = time.monotonic(), 0, 0
        while time.monotonic() < stop:
            if pos + frame_bytes > len(enc):
                pos = 0
            await ws.send(enc[pos:pos + frame_bytes])
            pos += frame_bytes
            k += 1
            sent[0] += n
            await asyncio.sleep(max(0.0, t0 + k * FRAME_S - time.monotonic()))
        await ws.send(json.dumps({"type": "stop"}))
        try:
            await asyncio.wait_for(reader, 10)
        except asyncio.TimeoutError:
            reader.cancel()


def run_calls(port: int, token: str, calls: int, seconds: float, done: threading.Event) -> None:
    audio = conversation()
    stop = time.monotonic() + seconds
    sent = [0]

    async def main() -> None:
        tasks = []
        for i in range(calls):
            url = f"ws://127.0.0.1:{port}/ingest?stream=call-{i:03d}&token={token}"
            tasks.append(asyncio.ensure_future(call(url, audio, (i * 7919 * 80) % len(audio), stop, sent)))
            await asyncio.sleep(0.02)            # calls start over two seconds, not all at once
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())
    done.set()


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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=60.0, help="the measured stretch")
    ap.add_argument("--warmup", type=float, default=15.0, help="seconds of calls before measuring")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = ap.parse_args(argv)

    import psutil
    from playwright.sync_api import sync_playwright

    port, token = _free_port(), "wallboard-bench"
    tmp = Path(tempfile.mkdtemp(prefix="emostream-wallboard-"))
    log = open(tmp / "server.log", "w+")
    server = subprocess.Popen([sys.executable, "-m", "streamer", "serve", "--port", str(port), "--token", token,
                               "--channels", "split", "--channel-names", "agent,customer",
                               "--alert", "customer:angry,fearful,disgust>3", "--idle-timeout", "120"],
                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    done = threading.Event()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    print(log.read()[-2000:], file=sys.stderr)
                    return 1
                time.sleep(0.2)
        total = args.warmup + args.seconds + 5
        feeder = threading.Thread(target=run_calls, args=(port, token, args.calls, total, done), daemon=True)
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(str(tmp / "profile"), executable_path=CHROMIUM, args=FLAGS,
                                                        headless=True, viewport={"width": 1920, "height": 1080})
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.goto(f"http://127.0.0.1:{port}/wallboard.html?token={token}")
            page.wait_for_function("window.wallboard && window.wallboard.connection === 'live'", timeout=30000)
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
                                       "cards: wallboard.cardRenders, count: wallboard.count})"))
                return m

            a = sample()
            time.sleep(args.seconds)
            b = sample()
            page.screenshot(path=str(tmp / "wallboard.png"))
            ctx.close()
        wall = b["wall"] - a["wall"]
        out = {
            "calls": args.calls, "seconds": round(wall, 1), "cards_shown": b["count"],
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
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


if __name__ == "__main__":
    sys.exit(main())
