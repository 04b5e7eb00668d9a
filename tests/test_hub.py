"""Streams and subscribers without a network: numbering, replay, bounded queues, recording."""

import asyncio
import json

import pytest

from streamer.server.hub import Hub, Stream


def win(i, ch=0):
    return {"type": "window", "start": float(i), "end": i + 3.0, "channel": ch, "channel_name": "mix",
            "speech": True, "label": "calm", "confidence": 0.5, "probs": {"calm": 0.5}, "raw": [0.1]}


def seqs(frames):
    return [json.loads(f).get("seq") for f in frames]


def test_seq_rises_by_one_and_raw_is_stripped():
    s = Stream("a")
    s.set_hello({"labels": ["calm"], "source": "x"})
    assert [s.publish(win(i)) for i in range(3)] == [1, 2, 3]
    sub, replay, gap = s.subscribe(0)
    msgs = [json.loads(f) for f in replay]
    assert msgs[0]["type"] == "hello" and "seq" not in msgs[0] and msgs[0]["stream"] == "a"
    assert [m["seq"] for m in msgs[1:]] == [1, 2, 3]
    assert all("raw" not in m for m in msgs) and gap is None


def test_replay_then_live_nothing_lost_or_repeated():
    async def main():
        s = Stream("a")
        s.set_hello({"labels": []})
        for i in range(5):
            s.publish(win(i))
        sub, replay, _ = s.subscribe(since=2)
        for i in range(5, 8):
            s.publish(win(i))
        s.end()
        got = seqs(replay[1:])
        while not (sub.closed and not sub.queue):
            await sub.wait()
            got += seqs(sub.take())
        return got
    assert asyncio.run(main()) == [3, 4, 5, 6, 7, 8, 9]  # 9 is the end message


def test_since_beyond_last_and_history_gap():
    s = Stream("a", history=3)
    for i in range(6):
        s.publish(win(i))
    _, replay, gap = s.subscribe(since=10)
    assert replay == [] and gap is None
    _, replay, gap = s.subscribe(since=1)
    assert seqs(replay) == [4, 5, 6] and gap == 2
    _, replay, gap = s.subscribe(since=3)
    assert seqs(replay) == [4, 5, 6] and gap is None


def test_slow_subscriber_is_dropped_and_others_keep_everything():
    async def main():
        s = Stream("a", max_queue=10)
        dropped = []
        slow, _, _ = s.subscribe(0, on_drop=dropped.append)
        fast, _, _ = s.subscribe(0)
        got = []
        for i in range(100):
            s.publish(win(i))
            got += seqs(fast.take())  # the fast one keeps up
        assert got == list(range(1, 101))
        assert dropped == [slow] and slow.closed and slow not in s.subscribers
        frames = slow.take()
        assert len(frames) == 1 and json.loads(frames[0])["type"] == "error"
        assert "too slow" in json.loads(frames[0])["message"]
    asyncio.run(main())


def test_end_closes_subscribers_and_late_subscriber_gets_everything():
    s = Stream("a")
    s.set_hello({"labels": []})
    s.publish(win(0))
    s.end()
    assert s.publish(win(1)) == 2  # nothing after end
    sub, replay, _ = s.subscribe()
    assert sub.closed and [json.loads(f)["type"] for f in replay] == ["hello", "window", "end"]


def test_current_emotion_per_channel_and_info():
    s = Stream("call-1", kind="ingest")
    s.set_hello({"labels": ["calm"], "channels": ["agent", "customer"], "source": "ingest:call-1"})
    s.publish(win(0, 0))
    s.publish({**win(0, 1), "label": "angry", "channel_name": "customer"})
    info = s.info()
    assert info["id"] == "call-1" and info["live"] and info["channels"] == ["agent", "customer"]
    assert [c["label"] for c in info["current"]] == ["calm", "angry"]
    assert all("band" not in c for c in info["current"])  # a model without a narrowband prior says nothing
    s.publish({**win(1, 1), "channel_name": "customer", "band": "telephone"})
    assert [c.get("band") for c in s.info()["current"]] == [None, "telephone"]


def test_hub_reserve_record_and_expiry(tmp_path):
    rec = tmp_path / "rec.jsonl"
    hub = Hub(record=rec, retain_s=0.0)
    assert hub.reserve("x") and not hub.reserve("x")
    s = hub.create("x", {"labels": []}, kind="ingest")
    assert not hub.reserve("x")
    s.publish(win(0))
    s.end()
    assert all(line.count('"stream":') == 1 for line in rec.read_text().splitlines())
    lines = [json.loads(line) for line in rec.read_text().splitlines()]
    assert [(m["stream"], m["type"], m.get("seq")) for m in lines] == \
        [("x", "hello", None), ("x", "window", 1), ("x", "end", 2)]
    assert hub.reserve("x")  # an ended stream's ID can be used again
    hub.release("x")
    assert hub.list(include_ended=True) == []  # expired (retain_s=0)
    hub.close()


def test_bad_record_path():
    from streamer.errors import UsageError
    with pytest.raises(UsageError):
        Hub(record="/nonexistent-dir/x.jsonl")


# -- messages, typed events, the memory backend ----------------------------------------------

def test_typed_events_and_dicts_give_the_same_frames():
    from streamer.events import End, Window

    a, b = Stream("a"), Stream("b")
    for s in (a, b):
        s.set_hello({"labels": ["calm"]})
    d = {**win(0), "raw": [0.3]}
    a.publish(d)
    b.publish(Window(start=0.0, end=3.0, channel=0, channel_name="mix", speech=True, label="calm",
                     confidence=0.5, probs={"calm": 0.5}, raw=None))
    a.publish({"type": "end"})
    b.publish(End())
    ra, rb = a.subscribe(0)[1][1:], b.subscribe(0)[1][1:]
    assert ra == rb and "raw" not in ra[0]
    assert a.info()["current"] == b.info()["current"]


def test_message_is_encoded_once_and_history_keeps_the_text():
    from streamer.server.message import Message

    calls = []

    class Counting(dict):
        def items(self):
            calls.append(1)
            return super().items()

    m = Message(4, Counting(win(1)))
    assert calls == [] and m.type == "window"
    assert m.text == m.text and len(calls) == 1
    assert json.loads(m.text)["seq"] == 4
    assert Message(None, text='{"type":"end","seq":9}').wire() == {"type": "end", "seq": 9}
    m.settle()
    assert m.event is None and m.type == "window" and json.loads(m.text)["seq"] == 4 and len(calls) == 1
    s = Stream("a")
    s.publish(win(0))
    kept, _ = s.backend.read_since("a", 0)
    assert kept[0].event is None and json.loads(kept[0].text)["seq"] == 1


def test_memory_backend_claims_and_history():
    from streamer.server.memory import MemoryBackend
    from streamer.server.message import Message

    async def main():
        b = MemoryBackend(history=4)
        assert await b.claim("x") and not await b.claim("x")
        b.start("x", Message(None, {"type": "hello", "labels": []}), "ingest")
        for i in range(1, 7):
            b.append("x", Message(i, win(i)))
        kept, gap = b.read_since("x", 0)
        assert [m.seq for m in kept] == [3, 4, 5, 6] and gap == 1
        kept, gap = b.read_since("x", 4)
        assert [m.seq for m in kept] == [5, 6] and gap is None
        assert b.read_since("x", 6) == ([], None) and b.read_since("nope", 0) == ([], None)
        b.end("x")
        assert await b.claim("x")  # free again after the end
        b.forget("x")
        assert b.read_since("x", 0) == ([], None)
        assert (await b.health())["ok"] and await b.list_streams() == [] and await b.lookup("x") is None
        assert [m async for m in b.follow("x", 0)] == []
    asyncio.run(main())


def test_hub_claims_through_its_backend():
    from streamer.server.memory import MemoryBackend

    class Busy(MemoryBackend):  # another node holds "taken"
        async def claim(self, stream_id):
            return stream_id != "taken" and await super().claim(stream_id)

    async def main():
        hub = Hub(backend=Busy())
        assert not await hub.claim("taken") and "taken" not in hub.reserved
        assert await hub.claim("free") and not await hub.claim("free")
        await hub.unclaim("free")
        assert await hub.claim("free")
        s = hub.create("free", {"labels": []}, kind="ingest")
        s.end()
        assert await hub.claim("free")  # ended: free again here and in the backend
        await hub.aclose()
    asyncio.run(main())


class FarBackend:
    """A stand-in for another node: one stream 'far' with three windows, an error, then end."""

    name = "far"
    node_id = "here"

    def __init__(self, end=True):
        from streamer.server.message import Message

        self.hello = Message(None, text=json.dumps({"type": "hello", "labels": ["calm"], "stream": "far",
                                                    "started": 1000.0}))
        self.items = [Message(i, text=json.dumps({**win(i), "seq": i})) for i in range(1, 4)]
        self.items.insert(1, Message(None, text='{"type":"error","message":"warning: far away"}'))
        if end:
            self.items.append(Message(4, text='{"type":"end","seq":4}'))
        self.go = asyncio.Event()

    async def claim(self, sid): return True
    async def release(self, sid): pass
    def start(self, sid, hello, kind): pass
    def append(self, sid, message): pass
    def read_since(self, sid, since): return [], None
    def end(self, sid): pass
    def forget(self, sid): pass
    async def list_streams(self): return [{"id": "far", "live": True, "kind": "ingest"}]
    async def lookup(self, sid): return self.hello if sid == "far" else None
    async def health(self): return {"ok": True}
    async def close(self): pass

    async def follow(self, sid, after):
        await self.go.wait()
        for m in self.items:
            if m.seq is None or m.seq > after:
                yield m
            await asyncio.sleep(0)


def test_another_nodes_stream_is_followed_through_the_backend():
    from streamer.server.hub import HubBackend

    async def main():
        far = FarBackend()
        assert isinstance(far, HubBackend)
        hub = Hub(backend=far)
        assert await hub.find("nope") is None
        s = await hub.find("far")
        assert s.kind == "remote" and s.started == 1000.0 and await hub.find("far") is s
        sub, replay, _ = hub.subscribe(s, 0)
        assert [json.loads(f)["type"] for f in replay] == ["hello"]
        far.go.set()
        got = []
        while not (sub.closed and not sub.queue):
            await sub.wait()
            got += [json.loads(f) for f in sub.take()]
        assert [(m["type"], m.get("seq")) for m in got] == \
            [("window", 1), ("error", None), ("window", 2), ("window", 3), ("end", 4)]
        assert s.ended and s.info()["current"][0]["label"] == "calm"
        # a late subscriber reads it from this node's copy
        _, replay, _ = hub.subscribe(s, 2)
        assert [json.loads(f).get("seq") for f in replay] == [None, 3, 4]
        assert hub.list() == [] and [r["id"] for r in await hub.list_all()] == ["far"]
        assert hub.live_count() == 0
        await hub.aclose()
    asyncio.run(main())


def test_a_followed_stream_that_stops_without_end_is_ended_here():
    async def main():
        far = FarBackend(end=False)
        far.go.set()
        hub = Hub(backend=far)
        s = await hub.find("far")
        sub, _, _ = hub.subscribe(s, 0)
        for _ in range(100):
            if s.ended:
                break
            await asyncio.sleep(0.01)
        assert s.ended and sub.closed
        await hub.aclose()
    asyncio.run(main())


def test_subscribers_finding_a_far_stream_at_once_share_one_follower():
    """Two subscribers asking for another node's stream at the same moment (the lookups interleave)
    get the same local copy, and both see it to its end (a second copy once cancelled the first's
    follower and left its subscriber waiting forever)."""
    class SlowFar(FarBackend):
        async def lookup(self, sid):
            await asyncio.sleep(0.01)
            return await super().lookup(sid)

        async def list_streams(self):
            await asyncio.sleep(0.01)
            return await super().list_streams()

    async def main():
        far = SlowFar()
        hub = Hub(backend=far)
        a, b = await asyncio.gather(hub.find("far"), hub.find("far"))
        assert a is b and len(hub._followers) == 1
        subs = [hub.subscribe(s, 0)[0] for s in (a, b)]
        far.go.set()
        for sub in subs:
            got = []
            while not (sub.closed and not sub.queue):
                await asyncio.wait_for(sub.wait(), 5)
                got += [json.loads(f) for f in sub.take()]
            assert got[-1]["type"] == "end"
        assert not hub._followers
        await hub.aclose()
    asyncio.run(main())


def test_a_far_stream_replaced_here_closes_its_subscribers():
    """A followed stream replaced by a new one under its id leaves no subscriber waiting."""
    async def main():
        far = FarBackend()
        hub = Hub(backend=far)
        s = await hub.find("far")
        sub, _, _ = hub.subscribe(s, 0)
        hub.create("far", {"type": "hello", "labels": ["calm"]}, kind="ingest")
        assert sub.closed and s.ended
        await hub.aclose()
    asyncio.run(main())
