"""The timeline: smoothing, segments, silence and alerts, as typed events."""

from __future__ import annotations

import numpy as np

from streamer.alerts import parse_rule
from streamer.events import Alert, Segment, Window
from streamer.timeline import Timeline, TimelineConfig


def _probs(k, p=0.9, n=8):
    v = np.full(n, (1 - p) / (n - 1))
    v[k] = p
    return v


def test_timeline_segments_merge_runs_and_absorb_blips():
    tl = Timeline(["a", "b", "c"], ["mix"], window_s=3.0, hop_s=1.0,
                  config=TimelineConfig(smooth_windows=1, min_segment_s=2.0, max_gap_s=2.0))
    seq = [0, 0, 0, 1, 0, 0, 2, 2, 2, 2]  # a single "b" window is a blip, the "c" run is real
    evs = []
    for i, k in enumerate(seq):
        evs += tl.add(0, float(i), i + 3.0, True, _probs(k, n=3))
    evs += tl.finish()
    segs = [e for e in evs if e["type"] == "segment"]
    assert [s["label"] for s in segs] == ["a", "c"]
    assert segs[0]["start"] == 0.0 and segs[0]["end"] == segs[1]["start"] == 7.0
    assert segs[1]["end"] == 12.0
    assert all(abs(s["confidence"] - (0.9 if s["label"] == "c" else 0.9 * 5 / 6 + 0.05 / 6)) < 0.02 for s in segs)


def test_timeline_silence_closes_a_segment_and_windows_stay_silent():
    tl = Timeline(["a", "b"], ["mix"], window_s=3.0, hop_s=1.0, config=TimelineConfig(smooth_windows=3))
    evs = []
    for i in range(4):
        evs += tl.add(0, float(i), i + 3.0, True, _probs(0, n=2))
    for i in range(4, 8):
        evs += tl.add(0, float(i), i + 3.0, False, None)
    for i in range(8, 12):
        evs += tl.add(0, float(i), i + 3.0, True, _probs(1, n=2))
    evs += tl.finish()
    wins = [e for e in evs if e["type"] == "window"]
    assert all(w["label"] is None and w["probs"] is None for w in wins if not w["speech"])
    segs = [e for e in evs if e["type"] == "segment"]
    assert [s["label"] for s in segs] == ["a", "b"] and segs[0]["end"] < segs[1]["start"]
    # smoothing restarted after the silence: the first "b" window is not dragged towards "a"
    first_b = next(w for w in wins if w["start"] == 8.0)
    assert first_b["label"] == "b" and first_b["confidence"] > 0.85


def test_a_long_pause_before_a_window_restarts_smoothing_and_a_short_one_does_not():
    def run(pause):
        tl = Timeline(["a", "b"], ["mix"], window_s=3.0, hop_s=1.0,
                      config=TimelineConfig(smooth_windows=3, reset_pause_s=0.7))
        evs = []
        for i, (k, ps) in enumerate([(0, 0.0), (0, 0.0), (0, 0.0), (1, pause)]):
            evs += tl.add(0, float(i), i + 3.0, True, _probs(k, n=2), pause_s=ps)
        return [e for e in evs if e["type"] == "window"][-1]

    assert run(1.0)["label"] == "b" and run(1.0)["confidence"] > 0.85  # after the pause: this window alone
    assert run(0.4)["label"] == "a"  # inside a run of one emotion the smoothing holds


def test_pauses_before_a_window_centre_are_measured_from_its_speech_flags():
    from streamer.analysis import pauses_before_centre

    flags = np.ones((4, 150))
    flags[1, 60:70] = 0.0  # 0.2 s inside the hop before the centre (frames 25-75)
    flags[2, 40:90] = 0.0  # 1.0 s, reaching past the centre: measured whole
    flags[3, 100:140] = 0.0  # after the centre: not before this window's centre
    out = pauses_before_centre(flags, hop_steps=50, step_s=0.02)
    assert np.allclose(out, [0.0, 0.2, 1.0, 0.0])


def test_events_are_typed_and_raw_stays_in_the_process():
    tl = Timeline(["a", "b"], ["agent", "customer"], window_s=3.0, hop_s=1.0)
    evs = tl.add(1, 0.0, 3.0, True, _probs(1, n=2)) + tl.add(0, 0.0, 3.0, False, None)
    w, silent = evs
    assert isinstance(w, Window) and w.channel == 1 and w.channel_name == "customer" and w.label == "b"
    assert np.allclose(w.raw, _probs(1, n=2)) and "raw" not in w.to_wire()
    assert isinstance(silent, Window) and not silent.speech and silent.raw is None
    assert silent.to_wire() == {"type": "window", "start": 0.0, "end": 3.0, "channel": 0, "channel_name": "agent",
                                "speech": False, "label": None, "confidence": None, "probs": None}
    assert all(isinstance(e, Segment) for e in tl.finish())


def test_an_alert_rule_fires_once_per_stretch_as_an_alert_event():
    rule = parse_rule("customer:b>3")
    tl = Timeline(["a", "b"], ["agent", "customer"], window_s=3.0, hop_s=1.0, alert_rules=[rule])
    evs = []
    for i in range(8):
        evs += tl.add(1, float(i), i + 3.0, True, _probs(1, n=2))
        evs += tl.add(0, float(i), i + 3.0, True, _probs(1, n=2))  # the agent's anger raises nothing
    alerts = [e for e in evs if isinstance(e, Alert)]
    assert len(alerts) == 1
    a = alerts[0]
    assert (a.channel, a.channel_name, a.rule, a.label) == (1, "customer", rule.name, "b")
    assert a.end - a.start >= 3.0
