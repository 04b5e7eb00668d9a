"""Memory of ``emostream serve`` under hostile load: resident set size (RSS) idle, at peak and after.

Starts ``emostream serve`` (ingest only, the shipped model) as a child process, samples its RSS
from /proc every 50 ms, and runs, one after another:

* ``ingest N``: N concurrent ``/ingest`` calls, each sending SECONDS of 16 kHz 16-bit speech
  (the bundled example, tiled) in 100 ms frames as fast as the server takes them (faster than
  real time), then ``stop``, and reading the timeline back to its ``end``;
* ``uploads N``: N concurrent ``POST /label`` of a MB-sized 44.1 kHz stereo WAV (answers counted
  by status: a full queue answers 503).

Each scenario reports the RSS before it, its peak and the RSS a few seconds after its last call
ended (``--settle``). Use ``--python``/``--pythonpath`` to measure another checkout (a "before"
figure) with the same interpreter.

    python -m tools.bench_memory                                  # 20 and 60 ingest calls, 8 uploads of 45 MB
    python -m tools.bench_memory --ingest 20,60 --seconds 60 --uploads 8 --upload-mb 45 --json mem.json
    python -m tools.bench_memory --pythonpath /tmp/before         # the same load against an older tree
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

EXAMPLE = ROOT / "streamer" / "examples" / "conversation.flac"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Sampler:
    """Samples a process's RSS in a thread; ``peak()`` since the last ``reset()``."""

    def __init__(self, pid: int, every: float = 0.05):
        self.pid, self.every = pid, every
        self._peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, rss_mb(self.pid))
            self._stop.wait(self.every)

    def reset(self) -> None:
        self._peak = rss_mb(self.pid)

    def peak(self) -> float:
        return max(self._peak, rss_mb(self.pid))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


def speech(seconds: float, rate: int = 16000) -> bytes:
    """The bundled example at ``rate``, tiled to ``seconds``, as 16-bit PCM."""
    from streamer.sources import load_audio

    y, _ = load_audio(EXAMPLE, sample_rate=rate)
    n = int(seconds * rate)
    y = np.tile(y, n // len(y) + 1)[:n]
    return (np.clip(y, -1, 1) * 32767).astype("<i2").tobytes()


async def ingest_call(port: int, sid: str, pcm: bytes, rate: int, frame_s: float = 0.1) -> int:
    """One faster-than-real-time ingest call; returns the number of messages read back."""
    from websockets.asyncio.client import connect

    step = max(2, int(rate * frame_s) * 2)
    got = 0
    async with connect(f"ws://127.0.0.1:{port}/ingest?stream={sid}", max_size=None, open_timeout=120,
                       close_timeout=60, ping_interval=None) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": rate, "channels": 1, "encoding": "pcm_s16le"}))

        async def reader() -> None:
            nonlocal got
            async for _ in ws:
                got += 1

        task = asyncio.ensure_future(reader())
        for i in range(0, len(pcm), step):
            await ws.send(pcm[i:i + step])
        await ws.send('{"type":"stop"}')
        await asyncio.wait_for(task, 600)
    return got


def upload(port: int, data: bytes) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/label?filename=call.wav", data=data, method="POST",
                                 headers={"Content-Type": "audio/wav"})
    try:
        with urllib.request.urlopen(req, timeout=900) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def wav_of_mb(mb: float) -> bytes:
    import soundfile as sf

    from streamer.sources import load_audio

    rate = 44100
    y, _ = load_audio(EXAMPLE, sample_rate=rate)
    n = int(mb * (1 << 20) / 4)  # stereo 16-bit: 4 bytes a frame
    y = np.tile(y, n // len(y) + 1)[:n]
    buf = io.BytesIO()
    sf.write(buf, np.stack([y, y[::-1]], axis=1), rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench_memory", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ingest", default="20,60", help="concurrent ingest calls per scenario (comma list; '' none)")
    ap.add_argument("--seconds", type=float, default=60.0, help="audio seconds each ingest call sends")
    ap.add_argument("--frame-s", type=float, default=0.1,
                    help="audio seconds per binary frame (0.1: a phone call; 32: the 1 MiB frame limit)")
    ap.add_argument("--uploads", type=int, default=8, help="concurrent uploads (0: none)")
    ap.add_argument("--upload-mb", type=float, default=45.0, help="size of each upload")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds after a scenario before 'after' is read")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs the server")
    ap.add_argument("--pythonpath", default=None, help="a checkout to run the server from (default: this one)")
    ap.add_argument("--serve-args", default="", help="extra options for emostream serve")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args()

    port = free_port()
    env = dict(os.environ)
    tree = args.pythonpath or str(ROOT)
    env["PYTHONPATH"] = tree
    cmd = [args.python, "-m", "streamer", "serve", "--port", str(port), "--log-level", "warning",
           *args.serve_args.split()]
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)
    results: dict = {"server": " ".join(cmd), "tree": tree, "scenarios": []}
    sampler = None
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/streams", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None:
                    log.seek(0)
                    raise SystemExit(f"server exited: {log.read().decode(errors='replace')[-2000:]}")
                time.sleep(0.2)
        time.sleep(1.0)
        results["idle_mb"] = round(rss_mb(proc.pid), 1)
        print(f"idle: {results['idle_mb']:.0f} MB", flush=True)
        sampler = Sampler(proc.pid)
        pcm = speech(args.seconds)
        n_run = 0
        for n in [int(x) for x in args.ingest.split(",") if x.strip()]:
            before = rss_mb(proc.pid)
            sampler.reset()
            t0 = time.time()

            async def run_all(n: int = n) -> list:
                return await asyncio.gather(*(ingest_call(port, f"m{n_run}-{i}", pcm, 16000, args.frame_s)
                                              for i in range(n)), return_exceptions=True)

            got = asyncio.run(run_all())
            errors = sorted({f"{type(g).__name__}: {g}"[:160] for g in got if isinstance(g, BaseException)})
            failed = sum(1 for g in got if isinstance(g, BaseException))
            got = [g for g in got if not isinstance(g, BaseException)]
            wall = time.time() - t0
            time.sleep(args.settle)
            row = {"scenario": f"ingest {n} ({args.frame_s:g} s frames)", "before_mb": round(before, 1), "peak_mb": round(sampler.peak(), 1),
                   "after_mb": round(rss_mb(proc.pid), 1), "wall_s": round(wall, 1),
                   "audio_s": n * args.seconds, "messages": sum(got), "failed_calls": failed,
                   **({"errors": errors[:3]} if errors else {})}
            n_run += 1
            results["scenarios"].append(row)
            print(json.dumps(row), flush=True)
        if args.uploads:
            data = wav_of_mb(args.upload_mb)
            before = rss_mb(proc.pid)
            sampler.reset()
            t0 = time.time()
            codes: list[int] = []
            threads = [threading.Thread(target=lambda: codes.append(upload(port, data))) for _ in range(args.uploads)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.time() - t0
            time.sleep(args.settle)
            row = {"scenario": f"uploads {args.uploads} x {args.upload_mb:g} MB", "before_mb": round(before, 1),
                   "peak_mb": round(sampler.peak(), 1), "after_mb": round(rss_mb(proc.pid), 1),
                   "wall_s": round(wall, 1), "status": {str(c): codes.count(c) for c in sorted(set(codes))}}
            results["scenarios"].append(row)
            print(json.dumps(row), flush=True)
    finally:
        if sampler is not None:
            sampler.stop()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
