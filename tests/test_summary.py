"""The end-of-call summary checked against a constructed timeline."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from streamer.summary import NEGATIVE_LABELS, Summary, summarise

NAMES = ["agent", "customer"]
DURATION = 60.0

# (channel, start, end, label): the segments of a one-minute call.
SEGMENTS = [
    (0, 0.0, 10.0, "neutral"),
    (0, 12.0, 20.0, "happy"),
    (0, 25.0, 30.0, "sad"),      # a lone negative stretch of 5 s
    (0, 30.0, 40.0, "neutral"),
    (1, 2.0, 8.0, "angry"),      # angry 2-8, 1 s silence, fearful 9-15, 2 s silence, angry 17-21:
    (1, 9.0, 15.0, "fearful"),   #   one negative stretch 2-21 (19 s) with silences <= 2 s
    (1, 17.0, 21.0, "angry"),
    (1, 24.0, 30.0, "angry"),    # 3 s silence before it: a new stretch (6 s)
    (1, 30.0, 33.0, "happy"),    # another emotion ends it
    (1, 33.0, 38.0, "disgust"),
]
ALERTS = [{"type": "alert", "start": 2.0, "end": 12.0, "channel": 1, "channel_name": "customer",
           "rule": "customer angry|fearful >10s", "label": "fearful"}]


def events() -> list[dict[str, Any]]:
    evs: list[dict[str, Any]] = []
    for ch, a, b, lb in SEGMENTS:
        evs.append({"type": "segment", "start": a, "end": b, "channel": ch, "channel_name": NAMES[ch],
                    "label": lb, "confidence": 0.8})
    evs += [dict(a) for a in ALERTS]
    evs.append({"type": "window", "start": 0.0, "end": 1.0, "channel": 0, "channel_name": "agent",
                "speech": True, "label": "neutral", "confidence": 0.8, "probs": None})
    evs.append({"type": "end"})  # not an event the summary knows: ignored
    return evs


def check(result: dict[str, Any]) -> None:
    assert result["duration"] == DURATION
    # speech: agent 0-10, 12-20, 25-40; customer 2-8, 9-15, 17-21, 24-38
    # somebody speaks 0-21 and 24-40 (37 s): 23 s of silence; both at once 2-8, 9-10, 12-15,
    # 17-20, 25-38: 26 s
    assert result["silence_s"] == 23.0 and result["overlap_s"] == 26.0
    agent, customer = result["channels"]
    assert (agent["channel"], agent["channel_name"]) == (0, "agent")
    assert (customer["channel"], customer["channel_name"]) == (1, "customer")

    assert agent["emotions"] == {"neutral": 20.0, "happy": 8.0, "sad": 5.0}
    assert agent["speech_s"] == 33.0 and agent["silence_s"] == 27.0
    assert agent["dominant"] == "neutral"
    assert agent["share"]["neutral"] == pytest.approx(20 / 33, abs=1e-4)
    assert agent["longest_negative"] == {"start": 25.0, "end": 30.0, "seconds": 5.0, "label": "sad"}
    assert agent["alerts"] == []

    assert customer["emotions"] == {"angry": 16.0, "fearful": 6.0, "happy": 3.0, "disgust": 5.0}
    assert customer["speech_s"] == 30.0 and customer["silence_s"] == 30.0
    assert customer["dominant"] == "angry"
    assert customer["longest_negative"] == {"start": 2.0, "end": 21.0, "seconds": 19.0,
                                            "label": "angry"}
    assert customer["alerts"] == [{"rule": "customer angry|fearful >10s", "start": 2.0, "end": 12.0,
                                   "label": "fearful"}]
    # ten 6 s slices; the agent's 24-30 slice holds only sad (25-30)
    assert [t["start"] for t in agent["trend"]] == [6.0 * k for k in range(10)]
    assert [t["end"] for t in agent["trend"]] == [6.0 * (k + 1) for k in range(10)]
    assert [t["dominant"] for t in agent["trend"]] == [
        "neutral", "neutral", "happy", "happy", "sad", "neutral", "neutral", None, None, None]
    # 12-18: happy 6 s; 18-24: happy 2 s; 24-30: sad 5 s; 30-36: neutral 6 s
    assert [t["negative_share"] for t in agent["trend"]] == [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, None, None, None]
    assert [t["dominant"] for t in customer["trend"]] == [
        "angry", "fearful", "fearful", "angry", "angry", "happy", "disgust", None, None, None]
    # 30-36: happy 3 s and disgust 3 s (a tie goes to the emotion heard first)
    assert [t["negative_share"] for t in customer["trend"]] == [1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 1.0, None, None, None]
    json.dumps(result)  # plain JSON, ready for --summary


def test_summarise_constructed_timeline():
    check(summarise(events(), DURATION))


def test_summarise_any_order():
    evs = events()
    random.Random(3).shuffle(evs)
    check(summarise(evs, DURATION))


def test_summary_observer_as_events_come():
    s = Summary()
    s.header({"channels": NAMES, "duration": None})
    for ev in sorted(events(), key=lambda e: e.get("end", 0.0)):  # segments arrive as they close
        s.event(ev)
    res = s.result(DURATION)
    check(res)
    assert all("band" not in c for c in res["channels"])  # windows without a band: no key
    s.event({"type": "window", "start": 0.0, "end": 3.0, "channel": 1, "speech": True, "band": "telephone"})
    assert [c.get("band") for c in s.result(DURATION)["channels"]] == [None, "telephone"]


def test_duration_defaults_and_empty_channel():
    res = summarise(events()[:1], None, channels=NAMES)
    agent, customer = res["channels"]
    assert res["duration"] == 10.0  # the latest end seen
    assert agent["speech_s"] == 10.0 and agent["silence_s"] == 0.0
    trend = customer.pop("trend")
    assert customer == {"channel": 1, "channel_name": "customer", "speech_s": 0.0, "silence_s": 10.0,
                        "emotions": {}, "share": {}, "dominant": None, "longest_negative": None,
                        "alerts": []}
    assert trend == [{"start": float(k), "end": float(k + 1), "dominant": None, "negative_share": None}
                     for k in range(10)]
    assert [t["dominant"] for t in agent["trend"]] == ["neutral"] * 10
    assert res["silence_s"] == 0.0 and res["overlap_s"] == 0.0


def test_trend_splits_segments_across_slices_and_mix_has_no_overlap():
    evs = [{"type": "segment", "start": 0.0, "end": 25.0, "channel": 0, "label": "calm"},
           {"type": "segment", "start": 25.0, "end": 95.0, "channel": 0, "label": "angry"}]
    res = summarise(evs, 100.0)
    trend = res["channels"][0]["trend"]
    # slice 20-30: calm 5 s, angry 5 s (a tie: calm came first); 90-100: angry 5 s, 5 s of silence
    assert trend[2] == {"start": 20.0, "end": 30.0, "dominant": "calm", "negative_share": 0.5}
    assert trend[9] == {"start": 90.0, "end": 100.0, "dominant": "angry", "negative_share": 1.0}
    assert [t["dominant"] for t in trend] == ["calm", "calm", "calm"] + ["angry"] * 7
    assert res["silence_s"] == 5.0 and res["overlap_s"] == 0.0


def test_silence_segments_overlaps_and_options():
    evs = [
        {"type": "segment", "start": 0.0, "end": 4.0, "channel": 0, "label": "angry"},
        {"type": "segment", "start": 4.0, "end": 6.0, "channel": 0, "label": None},  # silence
        {"type": "segment", "start": 5.0, "end": 9.0, "channel": 0, "label": "angry"},  # overlaps
    ]
    ch = summarise(evs, 10.0)["channels"][0]
    assert ch["channel_name"] == "mix"
    assert ch["emotions"] == {"angry": 7.0}  # 0-4 and 6-9: nothing counted twice
    assert ch["silence_s"] == 3.0
    assert ch["longest_negative"]["seconds"] == 9.0
    # With no silence allowed inside a stretch, the two angry runs stand apart.
    strict = summarise(evs, 10.0, max_gap_s=0.5)["channels"][0]
    assert strict["longest_negative"] == {"start": 0.0, "end": 4.0, "seconds": 4.0, "label": "angry"}
    # A different idea of negative.
    assert summarise(evs, 10.0, negative={"sad"})["channels"][0]["longest_negative"] is None
    assert NEGATIVE_LABELS == {"angry", "fearful", "sad", "disgust"}
