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
