"""The wallboard feed ``/ws?streams=all`` over real loopback WebSockets: the streams list, every
stream's messages tagged with its id, the same messages as each stream's own subscribers get."""

from __future__ import annotations

import asyncio
import json

import pytest
from serverkit import LABELS, http, make_server, run, send_stream, win
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus


async def read_feed(ws, ends: int, limit: float = 30) -> list[dict]:
    """Feed messages until ``ends`` streams have ended."""
    out = []
    while sum(m["type"] == "end" for m in out) < ends:
        out.append(json.loads(await asyncio.wait_for(ws.recv(), limit)))
    return out


def test_feed_carries_every_stream_tagged_and_in_order():
    async def main():
        async with make_server(workers=2) as srv:
            async with connect(f"ws://127.0.0.1:{srv.port}/ws?streams=all") as feed:
                first = json.loads(await feed.recv())
                assert first == {"type": "streams", "streams": []}
                own = await asyncio.gather(*(send_stream(srv.port, f"call-{i}", 4 + i) for i in range(3)))
                msgs = await read_feed(feed, 3)
            assert all(isinstance(m.get("stream"), str) for m in msgs)
            for i, got in enumerate(own):
                sid = f"call-{i}"
                mine = [{k: v for k, v in m.items() if k != "stream"} for m in msgs if m["stream"] == sid]
                # exactly what the stream's own connection got (hello, windows, segment, end)
                assert mine[0]["type"] == "hello" and got[0]["stream"] == sid
                assert mine[1:] == [{k: v for k, v in m.items() if k != "stream"} for m in got[1:]]
                assert [m["seq"] for m in mine[1:]] == list(range(1, len(mine)))
                assert sum(m["type"] == "window" for m in mine) == 4 + i
    run(main())


def test_feed_joined_late_starts_with_the_streams_list_and_live_hellos():
    async def main():
        async with make_server() as srv:
            a = srv.hub.create("a", {"labels": LABELS, "channels": ["mix"]}, kind="ingest")
            a.publish({**win(0), "label": "angry"})
            a.publish({"type": "alert", "start": 0.0, "end": 1.0, "channel": 0, "channel_name": "mix",
                       "rule": "angry>1", "label": "angry"})
            b = srv.hub.create("b", {"labels": LABELS}, kind="ingest")
            b.end()  # ended streams are not on the board
            async with connect(f"ws://127.0.0.1:{srv.port}/ws?streams=all") as feed:
                first = json.loads(await feed.recv())
                assert first["type"] == "streams" and [s["id"] for s in first["streams"]] == ["a"]
                row = first["streams"][0]
                assert row["current"][0]["label"] == "angry" and row["alerts"] == 1
                assert row["last_alert"]["rule"] == "angry>1"
                rows = json.loads((await asyncio.to_thread(http, f"http://127.0.0.1:{srv.port}/streams"))[2])
                assert {k: v for k, v in rows[0].items() if k != "subscribers"} == \
                    {k: v for k, v in row.items() if k != "subscribers"}  # the same objects as GET /streams
                hello = json.loads(await feed.recv())
                assert hello["type"] == "hello" and hello["stream"] == "a"
                a.publish(win(1))
                c = srv.hub.create("c", {"labels": LABELS})
                c.publish(win(0))
                a.end()
                got = [json.loads(await feed.recv()) for _ in range(4)]
                assert [(m["stream"], m["type"], m.get("seq")) for m in got] == \
                    [("a", "window", 3), ("c", "hello", None), ("c", "window", 1), ("a", "end", 4)]
                assert list(got[0])[0] == "stream"  # the id leads, so a reader can route before parsing all
    run(main())


@pytest.mark.parametrize("query,match", [("streams=some", "must be 'all'"), ("streams=all&since=3", "neither"),
                                         ("streams=all&stream=a", "neither")])
def test_feed_bad_parameters(query, match):
    async def main():
        async with make_server() as srv:
            async with connect(f"ws://127.0.0.1:{srv.port}/ws?{query}") as ws:
                err = json.loads(await ws.recv())
                assert err["type"] == "error" and match in err["message"]
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                assert ws.close_code == 1008
    run(main())


def test_feed_needs_the_token_and_refuses_input():
    async def main():
        async with make_server(token="t0k") as srv:
            with pytest.raises(InvalidStatus) as e:
                await connect(f"ws://127.0.0.1:{srv.port}/ws?streams=all")
            assert e.value.response.status_code == 401
            async with connect(f"ws://127.0.0.1:{srv.port}/ws?streams=all&token=t0k") as ws:
                assert json.loads(await ws.recv())["type"] == "streams"
                await ws.send('{"type":"subscribe"}')
                err = json.loads(await ws.recv())
                assert err["type"] == "error" and "unexpected message" in err["message"]
    run(main())


@pytest.mark.slow
def test_slow_feed_is_dropped_and_streams_carry_on():
    async def main():
        async with make_server(feed_queue=32, drop_grace=0.5) as srv:
            s = srv.hub.create("main", {"labels": LABELS})
            stuck = await connect(f"ws://127.0.0.1:{srv.port}/ws?streams=all", max_queue=1)
            own = await connect(f"ws://127.0.0.1:{srv.port}/ws")
            await own.recv()  # hello
            await asyncio.sleep(0.1)
            big = {"calm": 0.5, "pad": "x" * 4000}
            for i in range(2000):
                s.publish({**win(i), "probs": big})
                if i % 20 == 0:
                    await asyncio.sleep(0.001)
            assert srv.hub.subscriber_count() == len(s.subscribers) == 1  # the feed was dropped
            last = None
            for _ in range(2000):  # the stream's own subscriber got everything
                last = json.loads(await asyncio.wait_for(own.recv(), 10))
            assert last["seq"] == 2000
            await own.close()
            await stuck.close()
    run(main())


class Cluster:
    """A stand-in for other nodes behind a shared backend: their streams, listed and followed."""

    def __init__(self):
        from streamer.server.memory import MemoryBackend

        class Backend(MemoryBackend):
            async def list_streams(inner):
                return [{"id": sid, "live": True, "seq": len(r["log"]), "node": "other", "current": []}
                        for sid, r in self.remote.items()]

            async def lookup(inner, sid):
                from streamer.server.message import Message
                r = self.remote.get(sid)
                return Message(None, text=json.dumps(r["hello"])) if r else None

            async def follow(inner, sid, after):
                from streamer.server.message import Message
                r = self.remote[sid]
                i = 0
                while True:
                    while i < len(r["log"]):
                        seq, msg = i + 1, r["log"][i]
                        i += 1
                        if seq > after:
                            yield Message(seq, text=json.dumps({**msg, "seq": seq}))
                        if msg["type"] == "end":
                            return
                    r["more"].clear()
                    await r["more"].wait()

        self.backend = Backend()
        self.remote: dict[str, dict] = {}

    def add(self, sid, n):
        self.remote[sid] = {"hello": {"type": "hello", "labels": LABELS, "stream": sid, "started": 1.0},
                            "log": [win(i) for i in range(n)], "more": asyncio.Event()}

    def publish(self, sid, msg):
        self.remote[sid]["log"].append(msg)
        self.remote[sid]["more"].set()


def test_feed_covers_the_streams_of_other_nodes():
    from serverkit import FakePipeline

    from streamer.server import EmoServer, ServerConfig

    async def main():
        cluster = Cluster()
        cluster.add("far", 2)  # two windows already: history, not news
        srv = EmoServer(ServerConfig(port=0), pipeline_factory=FakePipeline, backend=cluster.backend)
        srv.hub.discover_s = 0.1
        async with srv:
            local = srv.hub.create("near", {"labels": LABELS}, kind="ingest")
            async with connect(f"ws://127.0.0.1:{srv.port}/ws?streams=all") as feed:
                first = json.loads(await feed.recv())
                assert sorted(r["id"] for r in first["streams"]) == ["far", "near"]
                hellos = [json.loads(await feed.recv()) for _ in range(2)]
                assert sorted(h["stream"] for h in hellos) == ["far", "near"]
                cluster.publish("far", win(2))
                m = json.loads(await feed.recv())
                assert (m["stream"], m["type"], m["seq"]) == ("far", "window", 3)
                local.publish(win(0))
                m = json.loads(await feed.recv())
                assert (m["stream"], m["seq"]) == ("near", 1)
                cluster.add("late", 0)  # another node starts a call: found within discover_s
                m = json.loads(await asyncio.wait_for(feed.recv(), 10))
                assert (m["type"], m["stream"]) == ("hello", "late")
                cluster.publish("late", win(0))
                cluster.publish("far", {"type": "end"})
                got = [json.loads(await feed.recv()) for _ in range(2)]
                assert sorted((g["stream"], g["type"], g["seq"]) for g in got) == \
                    [("far", "end", 4), ("late", "window", 1)]
            # the other nodes' windows are theirs to count
            body = (await asyncio.to_thread(http, f"http://127.0.0.1:{srv.port}/metrics"))[2]
            assert b"\nemostream_windows_total 1.0\n" in body
    run(main())
