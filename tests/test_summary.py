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
    check(s.result(DURATION))


def test_duration_defaults_and_empty_channel():
    res = summarise(events()[:1], None, channels=NAMES)
    agent, customer = res["channels"]
    assert res["duration"] == 10.0  # the latest end seen
    assert agent["speech_s"] == 10.0 and agent["silence_s"] == 0.0
    assert customer == {"channel": 1, "channel_name": "customer", "speech_s": 0.0, "silence_s": 10.0,
                        "emotions": {}, "share": {}, "dominant": None, "longest_negative": None,
                        "alerts": []}


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
