"""A real cluster on loopback: redis-server, three `emostream serve --redis ... --node-id N` processes
with the shipped model, and HAProxy configured from docs/deploy/haproxy.cfg. Calls go through the
balancer; subscribers on every node see every message in order; a node killed with -9 loses no
published message, its live streams end for their subscribers and its ids become free; a Redis
that stops answering turns /health into 503."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from streamer.codecs import encode_pcm
from tools.local_cluster import Cluster, Node, RedisServer

pytestmark = pytest.mark.slow

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "streamer", "examples", "conversation.flac")
START = {"type": "start", "sample_rate": 8000, "channels": 1, "encoding": "mulaw"}


def audio(seconds: float) -> list[bytes]:
    """The example conversation at 8 kHz as 100 ms mu-law frames."""
    from streamer.sources import load_audio

    y, _ = load_audio(EXAMPLE, 8000)
    y = np.tile(np.asarray(y, np.float32).reshape(-1), 4)[: int(seconds * 8000)][:, None]
    return [encode_pcm(y[i:i + 800], "mulaw") for i in range(0, len(y), 800)]


@pytest.fixture(scope="module")
def cluster():
    with RedisServer() as redis, Cluster(redis.url, nodes=3) as c:
        c.redis = redis
        try:
            c.wait_healthy(60)
            yield c
        except BaseException:
            print(c.logs())
            raise


def get_json(port: int, path: str) -> tuple[int, dict | list]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def call(port: int, sid: str, frames: list[bytes], pace: float = 0.0, stop: bool = True,
               hold: asyncio.Event | None = None) -> list[dict]:
    """One ingest call: start, frames (``pace`` s apart), stop; every message it is sent back."""
    got: list[dict] = []
    async with connect(f"ws://127.0.0.1:{port}/ingest?stream={sid}", open_timeout=30, ping_interval=None) as ws:
        async def receive() -> None:
            try:
                async for frame in ws:
                    got.append(json.loads(frame))
            except ConnectionClosed:  # e.g. the node was killed
                pass
        rx = asyncio.ensure_future(receive())
        try:
            await ws.send(json.dumps(START))
            for f in frames:
                await ws.send(f)
                if pace:
                    await asyncio.sleep(pace)
            if hold is not None:  # keep the call open (live) until told
                await hold.wait()
            if stop:
                await ws.send('{"type":"stop"}')
        except ConnectionClosed:  # refused, or the node went: what it sent is in ``got``
            pass
        try:
            await asyncio.wait_for(rx, 60)
        except asyncio.TimeoutError:
            rx.cancel()
    return got


async def watch(port: int, sid: str, since: int = 0, limit: float = 90) -> list[dict]:
    """A subscriber of ``sid`` on one node (or the balancer) until the server closes it."""
    got: list[dict] = []
    url = f"ws://127.0.0.1:{port}/ws?stream={sid}" + (f"&since={since}" if since else "")
    async with connect(url, open_timeout=30, ping_interval=None) as ws:
        async def receive() -> None:
            async for frame in ws:
                m = json.loads(frame)
                got.append(m)
                if m["type"] == "end":
                    return
        await asyncio.wait_for(receive(), limit)
    return got


async def wait_for_stream(port: int, sid: str, timeout: float = 30) -> dict:
    """The row of ``sid`` in a node's GET /streams once it is listed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, rows = await asyncio.to_thread(get_json, port, "/streams")
        for r in rows:
            if r["id"] == sid and r.get("seq", 0) > 0:
                return r
        await asyncio.sleep(0.2)
    raise AssertionError(f"{sid} never listed on port {port}")


def numbered(msgs: list[dict]) -> list[dict]:
    return [m for m in msgs if m.get("seq") is not None]


def test_calls_through_the_balancer_reach_subscribers_on_every_node(cluster):
    frames = audio(8)

    async def main():
        balancer = cluster.balancer_port
        hold = asyncio.Event()
        calls = {sid: asyncio.ensure_future(call(balancer, sid, frames, pace=0.02, hold=hold))
                 for sid in ("call-a", "call-b", "call-c")}
        rows = {sid: await wait_for_stream(cluster.node_ports[0], sid) for sid in calls}
        # every row names the node that analyses the call, node1's own too
        owners = {sid: r["node"] for sid, r in rows.items()}
        assert set(owners.values()) <= {"node1", "node2", "node3"}
        # subscribers on every node, for every call, some from the start and one resuming mid-call
        watchers = {(sid, p): asyncio.ensure_future(watch(p, sid)) for sid in calls for p in cluster.node_ports}
        resumed = asyncio.ensure_future(watch(cluster.node_ports[2], "call-a", since=3))
        # the whole cluster is listed on any node, and through the balancer
        _, listed = await asyncio.to_thread(get_json, balancer, "/streams")
        assert {"call-a", "call-b", "call-c"} <= {r["id"] for r in listed if r["live"]}
        # the same id is refused on every node while its call is live
        for p in cluster.node_ports:
            refused = await call(p, "call-a", [])
            assert refused and refused[0]["type"] == "error" and "in use" in refused[0]["message"]
        hold.set()
        sent = {sid: await t for sid, t in calls.items()}
        for sid, own in sent.items():
            ref = numbered(own)
            assert ref[-1]["type"] == "end" and [m["seq"] for m in ref] == list(range(1, len(ref) + 1))
            assert sum(m["type"] == "window" for m in ref) >= 4
            for p in cluster.node_ports:
                got = await watchers[(sid, p)]
                assert got[0]["type"] == "hello" and got[0]["stream"] == sid
                assert numbered(got) == ref, f"{sid} on port {p} differs from what its call got"
        tail = numbered(await resumed)
        assert tail == numbered(sent["call-a"])[3:]
        # ended: the ids are free again, and the finished streams stay readable on any node
        again = await call(balancer, "call-a", frames[:10])
        assert numbered(again)[-1]["type"] == "end"

    asyncio.run(asyncio.wait_for(main(), 240))


def test_killed_node_loses_nothing_published_and_frees_its_ids(cluster):
    frames = audio(20)

    async def main():
        balancer = cluster.balancer_port
        # a call that stays live: it sends 6 s of audio in real time, then waits (never stops)
        hold = asyncio.Event()
        ingest = asyncio.ensure_future(call(balancer, "doomed", frames[:60], pace=0.1, stop=False, hold=hold))
        row = await wait_for_stream(cluster.node_ports[0], "doomed")
        owner = next(n for n in cluster.nodes if n.name == row.get("node", "node1"))
        others = [n for n in cluster.nodes if n is not owner]
        watcher = asyncio.ensure_future(watch(others[0].port, "doomed"))
        await asyncio.sleep(7)  # the audio is in and analysed; every message long published
        owner.kill()
        t_kill = time.monotonic()
        got = await watcher
        took = time.monotonic() - t_kill
        hold.set()
        own = numbered(await ingest)
        seqs = [m["seq"] for m in numbered(got)]
        # everything the dead node had published is there, in order, then its error and end
        assert got[-2]["type"] == "error" and "node " + owner.name in got[-2]["message"]
        assert got[-1]["type"] == "end" and seqs == list(range(1, len(seqs) + 1))
        assert own and numbered(got)[:len(own)] == own
        assert took < 15, f"subscribers learnt of the dead node after {took:.1f} s"
        print(f"a subscriber on another node got the dead node's error and end {took:.1f} s after kill -9")
        # a late subscriber on the other survivor reads the whole stream the same way
        late = await watch(others[1].port, "doomed")
        assert numbered(late) == numbered(got)
        # its id is free: a new call under it, through the balancer, on a surviving node
        again = await call(balancer, "doomed", frames[:10])
        assert numbered(again)[-1]["type"] == "end"
        rows = {r["id"]: r for r in (await asyncio.to_thread(get_json, balancer, "/streams"))[1]}
        assert "doomed" not in rows or not rows["doomed"]["live"]
        for n in others:
            assert n.health()[0] == 200

    try:
        asyncio.run(asyncio.wait_for(main(), 240))
    except BaseException:
        print(cluster.logs())
        raise


def test_health_is_503_while_redis_does_not_answer():
    with RedisServer() as redis:
        node = Node(redis.url, "solo")
        try:
            node.start()
            status, body = node.health()
            assert status == 200 and json.loads(body)["backend"]["redis"] == "ok"
            os.kill(redis.proc.pid, signal.SIGSTOP)
            try:
                status, body = node.health()
                assert status == 503
                health = json.loads(body)
                assert health["status"] == "unavailable" and "Redis" in health["reason"]
            finally:
                os.kill(redis.proc.pid, signal.SIGCONT)
            deadline = time.monotonic() + 20
            while node.health()[0] != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert node.health()[0] == 200
            redis.stop()  # gone for good: still one clear answer, never a hang
            status, body = node.health()
            assert status == 503 and "Redis" in json.loads(body)["reason"]
        finally:
            node.stop()
