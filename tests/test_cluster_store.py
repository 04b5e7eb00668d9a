"""The Redis side of a cluster against a real ``redis-server`` on loopback: streams, replay, the
id lease, a dead owner's streams ended by a reaper, the listing, and an unreachable Redis."""

from __future__ import annotations

import asyncio
import json

import pytest

from streamer import protocol
from streamer.redis_store import RedisStore, RedisUnavailable
from tools.local_cluster import RedisServer, free_port


@pytest.fixture(scope="module")
def redis_url():
    with RedisServer() as srv:
        yield srv.url


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def msg(seq: int, kind: str = "window") -> str:
    return protocol.encode({"type": kind, "seq": seq, "start": seq * 0.5, "end": seq * 0.5 + 1, "label": "calm"})


async def stores(url: str, n: int, **kw) -> list[RedisStore]:
    out = []
    for i in range(n):
        s = RedisStore(url, f"n{i}", prefix=kw.pop("prefix", "t") if i == 0 else out[0].prefix, **kw)
        await s.connect()
        out.append(s)
    return out


async def collect(store: RedisStore, sid: str, since: int = 0, limit: float = 20) -> list[dict]:
    got = []

    async def read():
        async for text in store.follow(sid, since):
            got.append(json.loads(text))
    await asyncio.wait_for(read(), limit)
    return got


def test_publish_replay_follow_and_end(redis_url):
    async def main():
        a, b = await stores(redis_url, 2, prefix="t1")
        try:
            hello = protocol.encode({"type": "hello", "labels": ["calm"], "stream": "call-1"})
            assert await a.claim("call-1", hello, {"id": "call-1", "kind": "ingest"})
            assert await a.append("call-1", [(1, msg(1)), (2, msg(2))]) == 2
            assert await a.append("call-1", [(2, msg(2)), (3, msg(3))]) == 3  # a retried batch: no duplicate
            follower = asyncio.ensure_future(collect(b, "call-1", since=1))
            await asyncio.sleep(0.3)
            assert await a.append("call-1", [(4, msg(4))]) == 4
            assert await a.end("call-1") == 5
            got = await follower
            assert got[0]["type"] == "hello"
            assert [m["seq"] for m in got[1:]] == [2, 3, 4, 5]
            assert got[-1] == {"type": "end", "seq": 5}
            # an ended stream is still readable from the start, on any node
            again = await collect(b, "call-1")
            assert [m.get("seq") for m in again] == [None, 1, 2, 3, 4, 5]
            # the id is free again: a new generation, the listing shows it live from seq 0
            assert await b.claim("call-1", hello)
            listed = {s["id"]: s for s in await a.list_streams()}
            assert listed["call-1"]["live"] and listed["call-1"]["seq"] == 0 and listed["call-1"]["node"] == "n1"
            await b.end("call-1")
        finally:
            for s in (a, b):
                await s.close()
    run(main())


def test_lease_refuses_second_claim_and_renews(redis_url):
    async def main():
        a, b = await stores(redis_url, 2, prefix="t2", lease_s=0.6)
        try:
            assert await a.claim("x")
            assert not await b.claim("x")
            for _ in range(4):  # renewed past its length: still held
                await asyncio.sleep(0.3)
                assert await a.renew(["x"]) == []
            assert not await b.claim("x")
            await a.release("x")  # a claim that never became a stream leaves nothing behind
            assert await a.list_streams(include_ended=True) == []
            assert await b.claim("x")
            assert await a.renew(["x"]) == ["x"]  # not a's any more
        finally:
            for s in (a, b):
                await s.close()
    run(main())


def test_dead_owner_streams_end_with_error_for_followers(redis_url):
    async def main():
        a, b = await stores(redis_url, 2, prefix="t3", lease_s=0.5)
        try:
            assert await a.claim("c", protocol.encode({"type": "hello", "labels": []}))
            await a.append("c", [(1, msg(1)), (2, msg(2))])
            follower = asyncio.ensure_future(collect(b, "c", since=0))
            await asyncio.sleep(0.2)
            # a dies: no renewal, no end. b's reaper ends the stream once the lease expired
            assert await b.reap() == []
            await asyncio.sleep(0.8)
            assert await b.reap() == ["c"]
            got = await follower
            assert [m["type"] for m in got] == ["hello", "window", "window", "error", "end"]
            assert "lease expired" in got[3]["message"] and got[4]["seq"] == 3
            assert await a.append("c", [(3, msg(3))]) == -1  # the old owner learns it lost the stream
            assert await b.claim("c")  # the id is free
        finally:
            for s in (a, b):
                await s.close()
    run(main())


def test_claim_of_an_unreaped_orphan_ends_it_first(redis_url):
    async def main():
        a, b = await stores(redis_url, 2, prefix="t4", lease_s=0.3)
        try:
            assert await a.claim("c", protocol.encode({"type": "hello", "labels": []}))
            await a.append("c", [(1, msg(1))])
            follower = asyncio.ensure_future(collect(b, "c"))
            await asyncio.sleep(0.6)
            assert await b.claim("c")  # no reaper ran: the claim ends the old generation itself
            got = await follower
            assert [m["type"] for m in got] == ["hello", "window", "error", "end"]
        finally:
            for s in (a, b):
                await s.close()
    run(main())


def test_trimmed_history_says_what_is_missing(redis_url):
    async def main():
        (a,) = await stores(redis_url, 1, prefix="t5", maxlen=10)
        try:
            assert await a.claim("long")
            for i in range(0, 300, 50):
                await a.append("long", [(s, msg(s)) for s in range(i + 1, i + 51)])
            await a.end("long")
            got = await collect(a, "long", since=5)
            assert got[0]["type"] == "error" and "no longer holds seq 6 to" in got[0]["message"]
            seqs = [m["seq"] for m in got[1:]]
            assert seqs == list(range(seqs[0], 302)) and seqs[0] > 6
        finally:
            await a.close()
    run(main())


def test_unreachable_redis_is_one_error_and_health_says_so(redis_url):
    async def main():
        s = RedisStore(f"redis://127.0.0.1:{free_port()}/0", "n", timeout_s=1)
        with pytest.raises(RedisUnavailable) as err:
            await s.connect()
        assert err.value.exit_code == 4 and "cannot reach Redis" in str(err.value)
        with RedisServer() as srv:
            s = RedisStore(srv.url, "n", timeout_s=1)
            await s.connect()
            assert (await s.health())["redis"] == "ok"
            srv.stop()
            h = await s.health()
            assert h["redis"] == "unreachable" and h["redis_error"]
            await s.close()
    run(main())
