"""Typed events: the exact wire objects, the round trip, and clear errors for bad messages."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from streamer import events
from streamer.errors import ProtocolError
from streamer.events import Alert, End, Error, Hello, Segment, Window

HELLO = Hello(labels=("neutral", "angry"), sample_rate=16000, window=1.5, hop=0.5, source="a.wav",
              channels=("agent", "customer"), model={"name": "emotion", "version": "1.4.0"})
WINDOW = Window(start=0.0, end=1.5, channel=1, channel_name="customer", speech=True, label="angry",
                confidence=0.8123, probs={"neutral": 0.1877, "angry": 0.8123},
                raw=np.array([0.2, 0.8], np.float32))
SILENCE = Window(start=1.5, end=3.0, channel=0, channel_name="agent", speech=False)
SEGMENT = Segment(start=0.0, end=4.0, channel=1, channel_name="customer", label="angry", confidence=0.75)
ALERT = Alert(start=0.0, end=10.0, channel=1, channel_name="customer", rule="angry-customer", label="angry")


def test_wire_objects_are_the_documented_messages():
    assert WINDOW.to_wire(7) == {"type": "window", "start": 0.0, "end": 1.5, "channel": 1,
                                 "channel_name": "customer", "speech": True, "label": "angry",
                                 "confidence": 0.8123, "probs": {"neutral": 0.1877, "angry": 0.8123},
                                 "seq": 7}
    assert SILENCE.to_wire() == {"type": "window", "start": 1.5, "end": 3.0, "channel": 0, "channel_name": "agent",
                                 "speech": False, "label": None, "confidence": None, "probs": None}
    assert list(SEGMENT.to_wire(2)) == ["type", "start", "end", "channel", "channel_name", "label",
                                        "confidence", "seq"]
    assert ALERT.to_wire()["rule"] == "angry-customer"
    assert End().to_wire(9) == {"type": "end", "seq": 9}
    assert End(duration=12.5).to_wire() == {"type": "end", "duration": 12.5}
    assert Error("no such stream").to_wire() == {"type": "error", "message": "no such stream"}
    h = HELLO.to_wire()
    assert h == {"type": "hello", "labels": ["neutral", "angry"], "sample_rate": 16000, "window": 1.5,
                 "hop": 0.5, "source": "a.wav", "channels": ["agent", "customer"],
                 "model": {"name": "emotion", "version": "1.4.0"}}
    assert "seq" not in h and "colors" not in h and "stream" not in h  # optional keys only when set


def test_raw_probabilities_stay_in_the_process():
    assert "raw" not in WINDOW.to_wire()
    assert "raw" not in json.loads(events.encode(WINDOW, 1))
    # equality ignores raw (an array has no single truth value)
    assert WINDOW == dataclasses.replace(WINDOW, raw=None)


def test_encode_is_compact_json_text():
    text = events.encode(SEGMENT, 3)
    assert " " not in text and json.loads(text) == SEGMENT.to_wire(3)
    # a NaN confidence cannot go out as invalid JSON
    assert json.loads(events.encode(Segment(0, 1, 0, "mix", "angry", float("nan")), 1))["confidence"] is None


@pytest.mark.parametrize("event", [HELLO, WINDOW, SILENCE, SEGMENT, ALERT, End(), End(duration=3.0), Error("x"),
                                   Hello(labels=("a",), sample_rate=8000, window=1.0, hop=0.5, source=None,
                                         colors={"a": "#112233"}, stream="call-1", started=1.5,
                                         encoding="mulaw", input_rate=8000, input_channels=1)])
def test_round_trip(event):
    wire = json.loads(events.encode(event, 4))
    assert events.from_wire(wire) == event


def test_hello_keeps_unknown_keys():
    obj = {**HELLO.to_wire(), "capture": {"device": "x"}}
    h = events.from_wire(obj)
    assert h.extra == {"capture": {"device": "x"}} and h.to_wire() == obj


def test_events_are_frozen_and_slotted():
    with pytest.raises(AttributeError):
        SEGMENT.label = "sad"  # type: ignore[misc]
    assert not hasattr(SEGMENT, "__dict__")
    assert {c.type for c in events.EVENT_TYPES.values()} == {"hello", "window", "segment", "alert", "end", "error"}


def test_old_dict_events_still_encode():
    ev = {"type": "window", "start": 0.0, "end": 1.0, "channel": 0, "speech": False, "label": None,
          "confidence": None, "probs": None, "raw": np.zeros(2)}
    assert events.to_wire(ev, 5) == {**{k: v for k, v in ev.items() if k != "raw"}, "seq": 5}


@pytest.mark.parametrize("obj, match", [
    ({"type": "nope"}, "unknown event type"),
    ({"start": 1}, "unknown event type"),
    ({"type": "segment", "start": 1.0}, "segment event lacks"),
    ([1, 2], "JSON object"),
])
def test_bad_messages(obj, match):
    with pytest.raises(ProtocolError, match=match):
        events.from_wire(obj)


def test_design_minimal_messages_parse():
    # DESIGN.md's messages leave out channel_name (and an alert's end): still events
    w = events.from_wire({"type": "window", "seq": 1, "start": 0, "end": 1, "channel": 0, "speech": False,
                          "label": None, "confidence": None, "probs": None})
    assert isinstance(w, Window) and w.channel_name is None
    a = events.from_wire({"type": "alert", "seq": 2, "start": 3.0, "channel": 0, "rule": "r", "label": "angry"})
    assert isinstance(a, Alert) and a.end == 3.0


def test_hello_of_a_pipeline_carries_the_plots_colours(model):
    from streamer.pipeline import Pipeline
    from streamer.plot import label_colours

    meta, clf = model
    pipe = Pipeline(meta, clf, in_rate=8000, in_channels=2, channels="split", channel_names=["agent", "customer"])
    h = Hello.of(pipe, "ingest:call-1", encoding="mulaw", input_rate=8000, input_channels=2)
    w = h.to_wire()
    assert w["labels"] == list(meta.labels) and w["sample_rate"] == meta.features.sample_rate
    assert w["channels"] == ["agent", "customer"] and w["window"] == pipe.window_s and w["hop"] == pipe.hop_s
    assert w["colors"] == label_colours(meta.labels)  # one definition: the page draws what the PNG draws
    assert (w["encoding"], w["input_rate"], w["input_channels"]) == ("mulaw", 8000, 2)
    assert w["model"] == {"name": meta.name, "version": meta.version}
