"""Live benchmarks: subscriber latency and concurrent real-time ingest capacity.

1. Latency: from the last sample of a window entering the ring buffer to the window's message
   arriving at a subscriber, p50/p95, with 1 and with 500 subscribers. The server (with the real
   pipeline) runs in this process on a paced live source whose read() times are recorded (a read
   hands its block straight to the ring buffer); the subscribers run in a child process. Both
   processes stamp with CLOCK_MONOTONIC, which Linux shares between processes. The table splits
   it into pipeline (ring buffer -> event published) and hub -> subscriber, and also gives it from
   the last sample the window's last MFCC frame reads (n_fft - hop past the window's end).
2. Ingest: N concurrent real-time 8 kHz mu-law calls against an ``emostream serve`` child process;
   a window's lag is its arrival time minus the moment its last sample was due to be sent
   (stream start + window end). N rises until the lag p95 passes 0.5 s.

    python -m tools.bench_live                          # both, default sizes
    python -m tools.bench_live --subscribers 1,500 --seconds 20 --skip-ingest
    python -m tools.bench_live --skip-latency --ingest 50,100,200,300 --json bench.json
    python -m tools.bench_live --skip-latency --nodes 2 --ingest 50,100,150   # 2 nodes + Redis + HAProxy
    python -m tools.bench_live --skip-latency --skip-ingest --redis-latency 20

3. Cluster (``--nodes N``): the same ingest test through HAProxy (docs/deploy/haproxy.cfg) into N
   ``emostream serve --redis`` nodes sharing one ``redis-server``, all on this machine.
   ``--redis-latency CALLS``: real-time calls into node 1, each watched by a subscriber on node 1
   (served by the in-process hub) and one on node 2 (read back from Redis); per window, the second
   arrival minus the first is the latency Redis adds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

EXAMPLE = ROOT / "streamer" / "examples" / "conversation.flac"


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def load(rate: int, seconds: float) -> np.ndarray:
    """The example conversation at ``rate``, looped or cut to ``seconds``, [n, 1] float32."""
    from streamer.sources import load_audio

    y, _ = load_audio(str(EXAMPLE), rate)
    y = np.asarray(y, np.float32).reshape(-1)
    n = int(seconds * rate)
    y = np.tile(y, 1 + n // len(y))[:n]
    return y[:, None]


# -- 1. subscriber latency ---------------------------------------------------------------------

class PacedSource:
    """A live source over an array: read() returns blocks at real-time pace and logs when."""

    live = True
    duration = None

    def __init__(self, y: np.ndarray, rate: int, go: threading.Event, block_s: float = 0.02):
        self.y, self.sample_rate, self.channels = y, rate, y.shape[1]
        self.uri = "bench:paced"
        self.warnings: list[str] = []
        self.go = go
        self.block = int(block_s * rate)
        self.pos = 0
        self.t0 = 0.0
        self.log: list[tuple[int, float]] = []   # (frames read so far, monotonic time of the read)

    def read(self, max_frames: int) -> np.ndarray:
        if self.pos == 0:
            self.go.wait()
            self.t0 = time.monotonic()
        if self.pos >= len(self.y):
            return self.y[:0]
        due = self.t0 + (self.pos + self.block) / self.sample_rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        blk = self.y[self.pos:self.pos + self.block]
        self.pos += len(blk)
        self.log.append((self.pos, time.monotonic()))
        return blk

    def entered(self, t_end: float) -> float:
        """When the sample at stream time ``t_end`` (its last) was read into the ring buffer."""
        k = int(round(t_end * self.sample_rate)) - 1
        for pos, t in self.log:
            if pos > k:
                return t
        return self.log[-1][1]

    def close(self) -> None:
        pass


async def _subscribers_child(url: str, n: int, out: str) -> None:
    """Child process: n subscribers; records (subscriber, seq, end, arrival) of window messages."""
    from websockets.asyncio.client import connect

    rows: list[tuple[int, int, float, float]] = []

    async def one(i: int) -> None:
        async with connect(url, max_size=None, open_timeout=60, ping_interval=None) as ws:
            async for frame in ws:
                t = time.monotonic()
                if '"type":"window"' in frame:
                    m = json.loads(frame)
                    rows.append((i, m["seq"], m["end"], t))
                elif '"type":"end"' in frame:
                    return
    await asyncio.gather(*(one(i) for i in range(n)))
    Path(out).write_text(json.dumps(rows))


def bench_latency(n_subs: int, seconds: float, model: str | None) -> dict:
    from streamer.labelling import load_model
    from streamer.server import EmoServer, ServerConfig
    from streamer.pipeline import make_pipeline_factory

    meta, clf = load_model(model)
    rate = meta.features.sample_rate
    go = threading.Event()
    src = PacedSource(load(rate, seconds), rate, go)
    out = tempfile.mktemp(suffix=".json", prefix="emostream-bench-")

    async def main() -> dict:
        srv = EmoServer(ServerConfig(port=0, max_queue=4096), pipeline_factory=make_pipeline_factory(meta, clf))
        async with srv:
            task = srv.start_source(src, realtime=False)
            url = f"ws://127.0.0.1:{srv.port}/ws"
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tools.bench_live", "--_child", url, str(n_subs), out, cwd=ROOT)
            stream = srv.hub.get("main")
            published: dict[int, float] = {}
            publish = stream.publish

            def timed_publish(ev: dict) -> int:
                seq = publish(ev)
                if ev.get("type") == "window":
                    published[seq] = time.monotonic()
                return seq
            stream.publish = timed_publish  # type: ignore[method-assign]
            t_wait = time.monotonic()
            while len(stream.subscribers) < n_subs:
                if time.monotonic() - t_wait > 120:
                    raise RuntimeError(f"only {len(stream.subscribers)} of {n_subs} subscribers connected")
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            go.set()
            await task
            await asyncio.wait_for(child.wait(), 120)
        rows = json.loads(Path(out).read_text())
        os.unlink(out)
        lat = [(t - src.entered(end)) * 1000 for _, _, end, t in rows]
        # a window's last MFCC frame reads (n_fft - hop) samples past the window's nominal end
        f = meta.features
        ahead = max(0, f.n_fft - f.hop_length) / f.sample_rate
        lat_frame = [(t - src.entered(end + ahead)) * 1000 for _, _, end, t in rows]
        pipe = [(published[seq] - src.entered(end)) * 1000 for _, seq, end, _ in rows]
        fan = [(t - published[seq]) * 1000 for _, seq, _, t in rows]
        return {"subscribers": n_subs, "audio_s": seconds, "messages": len(rows),
                "p50_ms": round(pct(lat, 50), 1), "p95_ms": round(pct(lat, 95), 1),
                "max_ms": round(max(lat), 1) if lat else None,
                "lookahead_ms": round(ahead * 1000, 1),
                "from_last_read_sample_p50_ms": round(pct(lat_frame, 50), 1),
                "from_last_read_sample_p95_ms": round(pct(lat_frame, 95), 1),
                "pipeline_p50_ms": round(pct(pipe, 50), 1), "pipeline_p95_ms": round(pct(pipe, 95), 1),
                "fanout_p50_ms": round(pct(fan, 50), 1), "fanout_p95_ms": round(pct(fan, 95), 1)}

    return asyncio.run(main())


# -- 2. concurrent ingest ----------------------------------------------------------------------

async def _one_call(port: int, sid: str, payload: list[bytes], frame_s: float, lags: list[float],
                    stats: dict, start_delay: float, started: list[float] | None = None) -> None:
    from websockets.asyncio.client import connect

    await asyncio.sleep(start_delay)
    try:
        async with connect(f"ws://127.0.0.1:{port}/ingest?stream={sid}", max_size=None,
                           open_timeout=60, ping_interval=None) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": 8000, "channels": 1, "encoding": "mulaw"}))
            t0 = time.monotonic()
            if started is not None:  # tells other observers of this call when its audio began
                started.append(t0)

            async def receive() -> None:
                async for frame in ws:
                    if '"type":"window"' in frame:
                        m = json.loads(frame)
                        lags.append(time.monotonic() - (t0 + m["end"]))
                    elif '"type":"error"' in frame:
                        stats["errors"] += 1
                    elif '"type":"end"' in frame:
                        return
            rx = asyncio.ensure_future(receive())
            # a call the server closes fails in the sending loop below; this one then says nothing more
            rx.add_done_callback(lambda t: t.cancelled() or t.exception())
            for i, chunk in enumerate(payload):
                due = t0 + (i + 1) * frame_s
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    stats["late_sends"] += 1
                await ws.send(chunk)
            await ws.send('{"type":"stop"}')
            await asyncio.wait_for(rx, 120)
    except Exception as exc:  # a failed call is counted, not fatal
        stats["failed"] += 1
        stats.setdefault("why", repr(exc))


def _payload(seconds: float, frame_ms: float) -> list[bytes]:
    from streamer.codecs import encode_pcm

    y = load(8000, seconds)
    step = int(frame_ms / 1000 * 8000)
    return [encode_pcm(y[i:i + step], "mulaw") for i in range(0, len(y), step)]


def ingest_load(port: int, n_calls: int, seconds: float, frame_ms: float, pids: list[int], prefix: str = "call"
                ) -> dict:
    """N concurrent real-time calls against ``port``; window lag percentiles and the servers' CPU."""
    import psutil

    payload = _payload(seconds, frame_ms)
    lags: list[float] = []
    stats = {"errors": 0, "failed": 0, "late_sends": 0}
    procs = [psutil.Process(p) for p in pids]
    for ps in procs:
        ps.cpu_percent()
    t = time.monotonic()

    async def main() -> None:
        await asyncio.gather(*(_one_call(port, f"{prefix}-{i}", payload, frame_ms / 1000, lags, stats,
                                         random.random()) for i in range(n_calls)))
    asyncio.run(main())
    wall = time.monotonic() - t
    cpu = sum(ps.cpu_percent() for ps in procs)
    return {"calls": n_calls, "audio_s": seconds, "frame_ms": frame_ms, "windows": len(lags),
            "lag_p50_s": round(pct(lags, 50), 3), "lag_p95_s": round(pct(lags, 95), 3),
            "lag_max_s": round(max(lags), 3) if lags else None, "server_cpu_pct": round(cpu),
            "wall_s": round(wall, 1), **stats}


def _env(model: str | None, workers: int | None) -> dict[str, str]:
    env = {}
    if model:
        env["EMOSTREAM_MODEL"] = model
    if workers:
        env["EMOSTREAM_WORKERS"] = str(workers)
    return env


def bench_ingest(n_calls: int, seconds: float, frame_ms: float, model: str | None, workers: int | None) -> dict:
    """``ingest_load`` against a fresh ``emostream serve`` (one process, in-memory hub)."""
    from tools.local_cluster import Node

    node = Node(None, "bench", env=_env(model, workers))
    try:
        node.start()
        assert node.proc is not None
        return ingest_load(node.port, n_calls, seconds, frame_ms, [node.proc.pid])
    finally:
        node.stop()


def bench_cluster_ingest(levels: list[int], nodes: int, seconds: float, frame_ms: float, model: str | None,
                         workers: int | None) -> list[dict]:
    """``ingest_load`` through HAProxy in front of ``nodes`` ``serve --redis`` nodes (one Redis), per
    level until the lag p95 passes 0.5 s. The Redis server's CPU counts with the nodes'."""
    from tools.local_cluster import Cluster, RedisServer

    out = []
    with RedisServer() as redis, Cluster(redis.url, nodes, env=_env(model, workers)) as cluster:
        cluster.wait_healthy(60)
        assert cluster.balancer_port is not None and redis.proc is not None
        pids = [n.proc.pid for n in cluster.nodes if n.proc is not None] + [redis.proc.pid]
        for k, n in enumerate(levels):
            r = ingest_load(cluster.balancer_port, n, seconds, frame_ms, pids, prefix=f"l{k}")
            r["nodes"] = nodes
            out.append(r)
            _print_ingest(r)
            if not r["lag_p95_s"] <= 0.5 or r["failed"]:
                break
            time.sleep(1.0)
    return out


# -- 3. what Redis adds to a window --------------------------------------------------------------

def bench_redis_latency(n_calls: int, seconds: float, frame_ms: float, model: str | None,
                        workers: int | None = None) -> dict:
    """Each window's arrival at a subscriber on the ingesting node (the in-process hub) and at one
    on a second node (through Redis), for ``n_calls`` real-time calls into node 1; the difference
    is what Redis adds (publish, XADD, XREAD, relay)."""
    from websockets.asyncio.client import connect

    from tools.local_cluster import Cluster, RedisServer

    payload = _payload(seconds, frame_ms)
    arrivals: dict[tuple[str, str, int], float] = {}
    lags: dict[str, list[float]] = {"local": [], "remote": []}
    stats = {"errors": 0, "failed": 0, "late_sends": 0}

    async def watch(port: int, where: str, sid: str, t0: list[float]) -> None:
        for _ in range(100):  # the stream reaches the other node's listing shortly after it starts
            try:
                async with connect(f"ws://127.0.0.1:{port}/ws?stream={sid}", max_size=None,
                                   open_timeout=60, ping_interval=None) as ws:
                    async for frame in ws:
                        t = time.monotonic()
                        if '"type":"window"' in frame:
                            m = json.loads(frame)
                            arrivals[(where, sid, m["seq"])] = t
                            if t0:
                                lags[where].append(t - (t0[0] + m["end"]))
                        elif '"type":"end"' in frame:
                            return
                        elif '"type":"error"' in frame and "no stream" in frame:
                            break
            except Exception:
                pass
            await asyncio.sleep(0.1)

    async def one(ports: list[int], sid: str, delay: float) -> None:
        t0: list[float] = []
        lag_sink: list[float] = []
        await asyncio.sleep(delay)
        call = asyncio.ensure_future(_one_call(ports[0], sid, payload, frame_ms / 1000, lag_sink, stats, 0.0,
                                               started=t0))
        await asyncio.sleep(0.5)
        await asyncio.gather(call, watch(ports[0], "local", sid, t0), watch(ports[1], "remote", sid, t0))

    with RedisServer() as redis, Cluster(redis.url, 2, balancer=False, env=_env(model, workers)) as cluster:
        cluster.wait_healthy(60)

        async def main() -> None:
            await asyncio.gather(*(one(cluster.node_ports, f"lat-{i}", random.random()) for i in range(n_calls)))
        asyncio.run(main())
    added = [(arrivals[("remote", sid, seq)] - t) * 1000 for (where, sid, seq), t in arrivals.items()
             if where == "local" and ("remote", sid, seq) in arrivals]
    return {"calls": n_calls, "audio_s": seconds, "windows": len(added),
            "local_lag_p50_s": round(pct(lags["local"], 50), 3), "local_lag_p95_s": round(pct(lags["local"], 95), 3),
            "remote_lag_p50_s": round(pct(lags["remote"], 50), 3),
            "remote_lag_p95_s": round(pct(lags["remote"], 95), 3),
            "redis_added_p50_ms": round(pct(added, 50), 1), "redis_added_p95_ms": round(pct(added, 95), 1),
            "redis_added_max_ms": round(max(added), 1) if added else None, **stats}


def _print_ingest(r: dict) -> None:
    print(f"{r.get('nodes', 1):>5} {r['calls']:>6} {r['windows']:>8} {r['lag_p50_s']:>10} {r['lag_p95_s']:>10} "
          f"{r['lag_max_s']!s:>10} {r['server_cpu_pct']:>11} {r['late_sends']:>10} {r['failed']:>6}", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_child"]:
        asyncio.run(_subscribers_child(argv[1], int(argv[2]), argv[3]))
        return 0
    ap = argparse.ArgumentParser(prog="python -m tools.bench_live", description=__doc__.splitlines()[0])
    ap.add_argument("--subscribers", default="1,500", help="subscriber counts for the latency test")
    ap.add_argument("--seconds", type=float, default=20.0, help="audio seconds per latency run")
    ap.add_argument("--ingest", default="25,50,100,150,200,250,300,400",
                    help="concurrent call counts to try (stops after the first with lag p95 > 0.5 s)")
    ap.add_argument("--ingest-seconds", type=float, default=20.0, help="audio seconds per call")
    ap.add_argument("--frame-ms", type=float, default=20.0, help="ingest frame length (telephony: 20 ms)")
    ap.add_argument("--workers", type=int, default=None, help="server ingest threads (EMOSTREAM_WORKERS)")
    ap.add_argument("--model", default=None, help="model path (default: the shipped one)")
    ap.add_argument("--nodes", type=int, default=0,
                    help="ingest through HAProxy into N `serve --redis` nodes sharing one redis-server "
                         "(0: one plain `serve` process, the in-memory hub)")
    ap.add_argument("--redis-latency", type=int, default=0, metavar="CALLS",
                    help="also measure what Redis adds to a window: CALLS real-time calls into node 1, "
                         "subscribers on node 1 (in-process hub) and node 2 (through Redis)")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args(argv)
    result: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "platform": platform.platform()}, "latency": [], "ingest": []}
    if not args.skip_latency:
        print(f"{'subscribers':>11} {'messages':>9} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}   "
              f"{'pipeline p50/p95 ms':>19}   {'hub->subscriber p50/p95 ms':>26}   "
              f"{'from last sample read p50/p95 ms':>32}")
        for n in [int(x) for x in args.subscribers.split(",") if x]:
            r = bench_latency(n, args.seconds, args.model)
            result["latency"].append(r)
            print(f"{r['subscribers']:>11} {r['messages']:>9} {r['p50_ms']:>8} {r['p95_ms']:>8} {r['max_ms']:>8}   "
                  f"{str(r['pipeline_p50_ms']) + ' / ' + str(r['pipeline_p95_ms']):>19}   "
                  f"{str(r['fanout_p50_ms']) + ' / ' + str(r['fanout_p95_ms']):>26}   "
                  f"{str(r['from_last_read_sample_p50_ms']) + ' / ' + str(r['from_last_read_sample_p95_ms']):>32}",
                  flush=True)
    if not args.skip_ingest:
        print(f"{'nodes':>5} {'calls':>6} {'windows':>8} {'lag p50 s':>10} {'lag p95 s':>10} {'lag max s':>10} "
              f"{'server cpu%':>11} {'late sends':>10} {'failed':>6}")
        levels = [int(x) for x in args.ingest.split(",") if x]
        if args.nodes == 0:
            for n in levels:
                r = bench_ingest(n, args.ingest_seconds, args.frame_ms, args.model, args.workers)
                result["ingest"].append(r)
                _print_ingest(r)
                if not r["lag_p95_s"] <= 0.5 or r["failed"]:
                    break
        else:
            result["ingest"] = bench_cluster_ingest(levels, args.nodes, args.ingest_seconds, args.frame_ms,
                                                    args.model, args.workers)
        ok = [r["calls"] for r in result["ingest"] if r["lag_p95_s"] <= 0.5 and not r["failed"]]
        result["max_calls_p95_under_0_5s"] = max(ok) if ok else 0
        where = "one process, in-memory hub" if args.nodes == 0 else f"{args.nodes} node(s) + Redis + HAProxy"
        print(f"most concurrent calls with window lag p95 <= 0.5 s ({where}): {result['max_calls_p95_under_0_5s']}")
    if args.redis_latency:
        r = bench_redis_latency(args.redis_latency, args.ingest_seconds, args.frame_ms, args.model, args.workers)
        result["redis_latency"] = r
        print(f"{'calls':>6} {'windows':>8} {'same node lag p50/p95 s':>24} {'other node lag p50/p95 s':>25} "
              f"{'added by Redis p50/p95/max ms':>30} {'failed':>6}")
        print(f"{r['calls']:>6} {r['windows']:>8} {str(r['local_lag_p50_s']) + ' / ' + str(r['local_lag_p95_s']):>24} "
              f"{str(r['remote_lag_p50_s']) + ' / ' + str(r['remote_lag_p95_s']):>25} "
              f"{str(r['redis_added_p50_ms']) + ' / ' + str(r['redis_added_p95_ms']) + ' / ' + str(r['redis_added_max_ms']):>30} "
              f"{r['failed']:>6}",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
