"""The Redis hub backend against a real ``redis-server`` on loopback: streams, replay, the id lease,
a dead owner's streams ended by a reaper, the listing, two hubs ("nodes") sharing a stream, an
unreachable Redis at start and a frozen one while serving."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest

from streamer import protocol
from streamer.server.hub import Hub
from streamer.server.redis_backend import RedisBackend, RedisStore, RedisUnavailable, check_redis
from tests.conftest import free_port
from tests.serverkit import run
from tools.local_cluster import RedisServer

pytestmark = pytest.mark.slow  # real redis-server processes and outages: run with --all


@pytest.fixture(scope="module")
def redis_url():
    with RedisServer() as srv:
        yield srv.url


def msg(seq: int, kind: str = "window") -> str:
    return protocol.encode({"type": kind, "seq": seq, "start": seq * 0.5, "end": seq * 0.5 + 1, "label": "calm"})


def window(i: int, channel: int = 0) -> dict:
    return {"type": "window", "start": i * 0.5, "end": i * 0.5 + 1, "channel": channel, "speech": True,
            "label": "calm", "confidence": 0.5, "probs": {"calm": 0.5, "angry": 0.5}}


async def stores(url: str, n: int, prefix: str, **kw) -> list[RedisStore]:
    out = [RedisStore(url, f"n{i}", prefix=prefix, **kw) for i in range(n)]
    for s in out:
        await s.connect()
    return out


async def follow(store: RedisStore, sid: str, since: int = 0, limit: float = 20) -> list[dict]:
    """Replay after ``since`` then live entries until end, as wire objects (notes included)."""
    rs = await store.get(sid)
    items, gap, last = await store.read_since(rs.log, since)
    got = [json.loads(t) for _, t in items]
    if got and got[-1]["type"] == "end":
        return got

    async def live():
        async for _, _, text in store.follow(sid, rs.log, last):
            got.append(json.loads(text))
    await asyncio.wait_for(live(), limit)
    return got


def test_publish_replay_follow_and_finish(redis_url):
    async def main():
        a, b = await stores(redis_url, 2, "t1")
        try:
            assert await a.claim("call-1")
            lg = a.owned["call-1"]
            assert await a.append("call-1", lg, [(1, msg(1)), (2, msg(2))], {"hello": '{"type":"hello"}'}) == 2
            assert await a.append("call-1", lg, [(2, msg(2)), (3, msg(3))]) == 3  # a retried batch: no duplicate
            follower = asyncio.ensure_future(follow(b, "call-1", since=1))
            await asyncio.sleep(0.3)
            assert await a.append("call-1", lg, [(4, msg(4)), (5, protocol.encode({"type": "end", "seq": 5}))]) == 5
            assert await a.finish("call-1", lg) == 1
            got = await follower
            assert [m["seq"] for m in got] == [2, 3, 4, 5] and got[-1]["type"] == "end"
            assert [m["seq"] for m in await follow(b, "call-1")] == [1, 2, 3, 4, 5]  # still readable, anywhere
            # the id is free again: a new generation; the old one's writes no longer land anywhere
            assert await b.claim("call-1")
            assert await a.append("call-1", lg, [(6, msg(6))]) == -1
            listed = {rs.id: rs for rs in await a.list_streams()}
            assert "call-1" not in listed  # no hello yet: not listed
            await b.append("call-1", b.owned["call-1"], [], {"hello": '{"type":"hello","source":"x"}'})
            row = {rs.id: rs for rs in await a.list_streams()}["call-1"].row()
            assert row["live"] and row["seq"] == 0 and row["node"] == "n1" and row["source"] == "x"
        finally:
            for s in (a, b):
                await s.close()
    run(main())


def test_lease_refuses_second_claim_and_renews(redis_url):
    async def main():
        a, b = await stores(redis_url, 2, "t2", lease_s=0.6)
        try:
            assert await a.claim("x")
            assert not await b.claim("x")
            for _ in range(4):  # renewed past its length: still held
                await asyncio.sleep(0.3)
                assert await a.renew(["x"]) == []
            assert not await b.claim("x")
            await a.release("x")  # a claim that never became a stream leaves nothing behind
            assert await a.list_streams() == [] and await a.get("x") is None
            assert await b.claim("x")
            a.owned["x"] = b.owned["x"]
            assert await a.renew(["x"]) == ["x"]  # b's lease now
        finally:
            for s in (a, b):
                await s.close()
    run(main())


def test_dead_owner_streams_end_with_error_for_followers(redis_url):
    async def main():
        a, b = await stores(redis_url, 2, "t3", lease_s=0.5)
        try:
            assert await a.claim("c")
            lg = a.owned["c"]
            await a.append("c", lg, [(1, msg(1)), (2, msg(2))], {"hello": '{"type":"hello"}'})
            follower = asyncio.ensure_future(follow(b, "c"))
            await asyncio.sleep(0.2)
            assert await b.reap() == []  # a's lease still runs
            await asyncio.sleep(0.8)   # a "died": no renewal
            assert await b.reap() == ["c"]
            got = await follower
            assert [m["type"] for m in got] == ["window", "window", "error", "end"]
            assert "node n0 stopped" in got[2]["message"] and got[3]["seq"] == 3
            assert await a.append("c", lg, [(3, msg(3))]) == -1  # the old owner learns it lost the stream
            assert await b.claim("c")  # the id is free
        finally:
            for s in (a, b):
                await s.close()
    run(main())


def test_claim_of_an_unreaped_orphan_ends_it_first(redis_url):
    async def main():
        a, b = await stores(redis_url, 2, "t4", lease_s=0.3)
        try:
            assert await a.claim("c")
            await a.append("c", a.owned["c"], [(1, msg(1))])
            follower = asyncio.ensure_future(follow(b, "c"))
            await asyncio.sleep(0.6)
            assert await b.claim("c")  # no reaper ran: the claim ends the old generation itself
            assert [m["type"] for m in await follower] == ["window", "error", "end"]
        finally:
            for s in (a, b):
                await s.close()
    run(main())


def test_trimmed_history_is_reported(redis_url):
    async def main():
        (a,) = await stores(redis_url, 1, "t5", maxlen=10)
        try:
            assert await a.claim("long")
            for i in range(0, 300, 50):
                await a.append("long", a.owned["long"], [(s, msg(s)) for s in range(i + 1, i + 51)])
            items, gap, _ = await a.read_since(a.owned["long"], 5)
            assert gap == 6 and items[0][0] > 6 and [s for s, _ in items] == list(range(items[0][0], 301))
            items, gap, _ = await a.read_since(a.owned["long"], 299)
            assert gap is None and [s for s, _ in items] == [300]
        finally:
            await a.close()
    run(main())


def test_unreachable_redis_at_start_is_one_error_with_exit_4():
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnavailable) as err:
        check_redis(url, timeout_s=1)
    assert err.value.exit_code == 4 and str(err.value).startswith(f"cannot reach Redis at {url}: ")
    assert "\n" not in str(err.value)
    with pytest.raises(RedisUnavailable):
        run(RedisStore(url, "n", timeout_s=1).connect())


def test_serve_with_an_unreachable_redis_exits_4_with_one_line():
    from conftest import emostream

    url = f"redis://127.0.0.1:{free_port()}/0"
    r = emostream("serve", "--port", str(free_port()), "--redis", url, "--node-id", "n1")
    err = r.stderr.decode().strip()
    assert r.returncode == 4 and err.startswith(f"emostream: error: cannot reach Redis at {url}")
    assert "\n" not in err and "Traceback" not in err
    r = emostream("serve", "--node-id", "n1")
    assert r.returncode != 0 and "--node-id needs --redis" in r.stderr.decode()
    r = emostream("serve", "--redis", "http://example.org/")
    assert r.returncode != 0 and "redis://HOST:6379/0" in r.stderr.decode()
    r = emostream("serve", "--redis", "redis://127.0.0.1:port/0")
    assert r.returncode == 64 and r.stderr.decode().count("\n") == 1 and "bad --redis address" in r.stderr.decode()
    r = emostream("serve", "--redis", f"redis://:s3cret@127.0.0.1:{free_port()}/0")  # the password is never shown
    assert r.returncode == 4 and "s3cret" not in r.stderr.decode() and ":***@" in r.stderr.decode()


# -- the backend under two hubs: two nodes in one process -------------------------------------

async def node(url: str, name: str, prefix: str, **kw) -> Hub:
    backend = RedisBackend(url, name, prefix=prefix, **kw)
    await backend.open()
    return Hub(backend=backend)


async def read_all(hub: Hub, sid: str, since: int = 0, limit: float = 20) -> list[dict]:
    """Subscribe on ``hub`` to ``sid`` and collect frames until the subscriber closes."""
    stream = await hub.find(sid)
    assert stream is not None, f"{sid} not found"
    sub, replay, _ = hub.subscribe(stream, since)
    got = [json.loads(t) for t in replay]

    async def drain():
        while True:
            await sub.wait()
            got.extend(json.loads(t) for t in sub.take())
            if sub.closed and not sub.queue:
                return
    await asyncio.wait_for(drain(), limit)
    return got


def test_two_nodes_share_a_stream_in_order(redis_url):
    async def main():
        a, b = await node(redis_url, "alpha", "t6"), await node(redis_url, "beta", "t6")
        try:
            assert await a.claim("call-7")
            assert not await b.claim("call-7")  # refused cluster-wide while live
            s = a.create("call-7", {"type": "hello", "labels": ["calm", "angry"], "source": "ingest:call-7"},
                         kind="ingest")
            s.publish_many(window(i) for i in range(5))
            await asyncio.sleep(0.3)
            listed = {r["id"]: r for r in await b.list_all()}
            assert listed["call-7"]["node"] == "alpha" and listed["call-7"]["live"]
            assert listed["call-7"]["current"][0]["label"] == "calm"
            mine = {r["id"]: r for r in await a.list_all()}["call-7"]  # its own node lists it alike
            assert mine["node"] == "alpha" and mine["current"] == listed["call-7"]["current"]
            # the since= subscriber comes first, before b's copy of the stream has caught up: the
            # seqs up to 3 it relays while catching up must not reach it live
            late = asyncio.ensure_future(read_all(b, "call-7", since=3))
            reader = asyncio.ensure_future(read_all(b, "call-7"))
            await asyncio.sleep(0.3)
            s.publish_many(window(i) for i in range(5, 200))
            s.end()
            got, tail = await reader, await late
            assert got[0]["type"] == "hello" and got[0]["source"] == "ingest:call-7"
            assert [m["seq"] for m in got[1:]] == list(range(1, 202)) and got[-1]["type"] == "end"
            assert [m["seq"] for m in tail[1:]] == list(range(4, 202))
            assert await b.claim("call-7")  # free after the end
        finally:
            for h in (a, b):
                await h.aclose()
    run(main())


def test_frozen_redis_keeps_the_call_local_and_loses_nothing():
    async def main(srv: RedisServer):
        a = await node(srv.url, "alpha", "t7", timeout_s=0.5, lease_s=30)
        b = await node(srv.url, "beta", "t7", timeout_s=0.5, lease_s=30)
        notices: list[str] = []
        a.backend.on_notice = lambda sid, text: notices.append(text)
        try:
            assert await a.claim("c")
            s = a.create("c", {"type": "hello", "labels": ["calm"]}, kind="ingest")
            local_sub, _, _ = s.subscribe(0)
            s.publish_many(window(i) for i in range(10))
            await asyncio.sleep(0.3)
            reader = asyncio.ensure_future(read_all(b, "c", limit=40))
            await asyncio.sleep(0.5)
            os.kill(srv.proc.pid, signal.SIGSTOP)  # Redis stops answering: a partition, not a restart
            try:
                s.publish_many(window(i) for i in range(10, 40))
                await asyncio.sleep(3.0)  # longer than b's blocking read and its timeout
                health = await a.backend.health()
                assert not health["ok"] and health["redis"] == "unreachable"
                assert any("Redis unreachable" in n for n in notices)
                assert [json.loads(t)["seq"] for t in local_sub.take()][-1] == 40  # labelled locally meanwhile
            finally:
                os.kill(srv.proc.pid, signal.SIGCONT)
            s.publish_many(window(i) for i in range(40, 50))
            s.end()
            got = await reader
            seqs = [m["seq"] for m in got if m.get("seq") is not None]
            assert seqs == list(range(1, 52))  # nothing lost, nothing repeated, in order
            # the subscriber on the other node was told, then told again when Redis was back
            notes = [m["message"] for m in got if m["type"] == "error"]
            assert any(n.startswith("warning: Redis unreachable") for n in notes), notes
            assert any(n.startswith("warning: Redis reachable again") for n in notes), notes
            for _ in range(40):
                if (await a.backend.health())["ok"]:
                    break
                await asyncio.sleep(0.1)
            assert (await a.backend.health())["ok"]
            assert any("reachable again" in n for n in notices)
        finally:
            for h in (a, b):
                await h.aclose()

    with RedisServer() as srv:
        run(main(srv), timeout=90)


def test_a_stream_followed_before_its_first_message_waits_for_it(redis_url):
    async def main():
        a, b = await node(redis_url, "alpha", "t8"), await node(redis_url, "beta", "t8")
        try:
            assert await a.claim("quiet")
            s = a.create("quiet", {"type": "hello", "labels": ["calm"]}, kind="ingest")
            await asyncio.sleep(0.3)
            reader = asyncio.ensure_future(read_all(b, "quiet"))
            await asyncio.sleep(2.5)  # longer than a blocking read: nothing has been written yet
            s.publish_many(window(i) for i in range(3))
            s.end()
            got = await reader
            assert [m["type"] for m in got] == ["hello", "window", "window", "window", "end"]
        finally:
            for h in (a, b):
                await h.aclose()
    run(main())


def test_redis_that_lost_its_data_leaves_live_calls_local_and_says_so(redis_url):
    async def main():
        a, b = await node(redis_url, "alpha", "t9", lease_s=1.0), await node(redis_url, "beta", "t9")
        notices: list[tuple[str | None, str]] = []
        a.backend.on_notice = lambda sid, text: notices.append((sid, text))
        try:
            assert await a.claim("old")
            s = a.create("old", {"type": "hello", "labels": ["calm"]}, kind="ingest")
            sub, _, _ = s.subscribe(0)
            s.publish_many(window(i) for i in range(3))
            await asyncio.sleep(0.3)
            await a.backend.store.redis.flushdb()  # a Redis restarted without persistence
            await asyncio.sleep(1.5)
            assert any(sid == "old" and "no longer shared" in text for sid, text in notices), notices
            s.publish_many(window(i) for i in range(3, 6))
            s.end()
            assert [json.loads(t)["seq"] for t in sub.take()] == [1, 2, 3, 4, 5, 6, 7]  # still served here
            assert await b.backend.lookup("old") is None
            # a call that starts now is shared again
            assert await a.claim("new")
            n = a.create("new", {"type": "hello", "labels": ["calm"]}, kind="ingest")
            n.publish_many(window(i) for i in range(2))
            n.end()
            await asyncio.sleep(0.3)
            assert [m["type"] for m in await read_all(b, "new")] == ["hello", "window", "window", "end"]
            assert (await a.backend.health())["ok"]
        finally:
            for h in (a, b):
                await h.aclose()
    run(main())


def test_a_redis_outage_refuses_new_ingest_and_unknown_subscribers_with_1013():
    """With Redis frozen, a new ingest id cannot be checked cluster-wide and another node's stream
    cannot be looked up: each gets one ``error`` and close 1013 (try again later), no traceback."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from streamer.server import EmoServer, ServerConfig
    from tests.serverkit import FakePipeline

    async def refused(url: str, first: str | None = None) -> tuple[list[dict], int | None]:
        got: list[dict] = []
        async with connect(url) as ws:
            if first is not None:
                await ws.send(first)
            try:
                async for frame in ws:
                    got.append(json.loads(frame))
            except ConnectionClosed:
                pass
            return got, ws.close_code

    async def main(srv: RedisServer):
        backend = RedisBackend(srv.url, "alpha", prefix="t10", timeout_s=0.5)
        await backend.open()  # connected, as serve --redis is, before Redis stops answering
        server = EmoServer(ServerConfig(port=0), pipeline_factory=FakePipeline, backend=backend)
        await server.start()
        try:
            base = f"ws://127.0.0.1:{server.port}"
            os.kill(srv.proc.pid, signal.SIGSTOP)
            try:
                start = json.dumps({"type": "start", "sample_rate": 8000, "channels": 1, "encoding": "pcm_s16le"})
                got, code = await refused(f"{base}/ingest?stream=c1", start)
                assert code == 1013, (code, got)
                assert [m["type"] for m in got] == ["error"] and "Redis unreachable" in got[0]["message"]
                assert "try again later" in got[0]["message"]
                got, code = await refused(f"{base}/ws?stream=elsewhere&since=2")
                assert code == 1013, (code, got)
                assert [m["type"] for m in got] == ["error"] and "Redis unreachable" in got[0]["message"]
            finally:
                os.kill(srv.proc.pid, signal.SIGCONT)
            # Redis back: the same id is accepted again
            async with connect(f"{base}/ingest?stream=c1") as ws:
                await ws.send(start)
                await ws.send('{"type":"stop"}')
                types = [json.loads(f)["type"] async for f in ws]
            assert types[0] == "hello" and types[-1] == "end", types
        finally:
            await server.close()

    with RedisServer() as srv:
        run(main(srv), timeout=90)
