"""Alert rules: parsing, rule files, and stretches that fire or do not."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streamer.alerts import AlertRule, AlertTracker, load_rules, parse_rule
from streamer.errors import UsageError

LABELS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
CODES = {"n": "neutral", "h": "happy", "s": "sad", "a": "angry", "f": "fearful", "d": "disgust"}


def windows(track: str, channel: int = 0, name: str = "mix", window: float = 1.0,
            hop: float = 1.0) -> list[dict[str, Any]]:
    """Window events from one character per hop: a label's letter, "_" for silence."""
    out = []
    for i, code in enumerate(track):
        label = CODES.get(code)
        out.append({"type": "window", "start": i * hop, "end": i * hop + window, "channel": channel,
                    "channel_name": name, "speech": label is not None, "label": label,
                    "confidence": None if label is None else 0.9, "probs": None})
    return out


def run(rules: list[AlertRule], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    tracker = AlertTracker(rules)
    out: list[dict[str, Any]] = []
    for ev in events:
        out += tracker.update(ev)
    return out


# ------------------------------------------------------------------------------------- parsing

def test_parse_rule_with_channel():
    r = parse_rule("customer:angry,fearful>10")
    assert r.channel == "customer" and r.labels == frozenset({"angry", "fearful"})
    assert r.min_duration_s == 10 and r.max_gap_s == 2.0
    assert r.name == "customer angry|fearful >10s"


def test_parse_rule_without_channel_index_and_spaces():
    r = parse_rule("angry>10")
    assert r.channel is None and r.name == "angry >10s"
    r = parse_rule(" 1 : sad , angry >= 2.5 ")
    assert r.channel == 1 and r.labels == {"sad", "angry"} and r.min_duration_s == 2.5
    assert r.name == "1 sad|angry >2.5s"
    assert parse_rule("agent:sad>30s").min_duration_s == 30


@pytest.mark.parametrize("text", ["", "angry", "customer:>10", "angry>", "angry>ten", "angry>-3",
                                  "a:b:c>1", "angry>10>3"])
def test_parse_rule_refuses_bad_text(text):
    with pytest.raises(UsageError):
        parse_rule(text)


def test_parse_rule_checks_labels_when_given():
    assert parse_rule("angry>1", labels=LABELS).labels == {"angry"}
    with pytest.raises(UsageError, match="unknown label 'angery'"):
        parse_rule("customer:angery>10", labels=LABELS)


def test_load_rules(tmp_path):
    p = tmp_path / "rules.json"
    p.write_text(json.dumps([
        {"name": "upset customer", "channel": "customer", "labels": ["angry", "fearful"], "seconds": 10},
        {"labels": ["sad"], "seconds": 30, "channel": 0, "max_gap_s": 5},
        {"labels": ["disgust"], "seconds": 4},
    ]))
    a, b, c = load_rules(p)
    assert a == AlertRule("upset customer", "customer", frozenset({"angry", "fearful"}), 10.0)
    assert b.channel == 0 and b.max_gap_s == 5 and b.name == "0 sad >30s"
    assert c.channel is None and c.name == "disgust >4s"


@pytest.mark.parametrize("content, message", [
    ("[{", "not valid JSON"),
    ('{"rules": 1}', "unknown key 'rules'"),
    ("3", "expected a JSON list"),
    ("[3]", "rule 1: expected an object"),
    ('[{"labels": ["angry"]}]', 'missing "seconds"'),
    ('[{"labels": [], "seconds": 3}]', '"labels" must be a non-empty list'),
    ('[{"labels": ["angry"], "seconds": "10"}]', '"seconds" must be a number'),
    ('[{"labels": ["angry"], "seconds": -1}]', '"seconds" must be a number'),
    ('[{"labels": ["angry"], "seconds": 1}, {"labels": ["angry"], "seconds": 1, "chanel": "a"}]',
     "rule 2: unknown key 'chanel'"),
    ('[{"labels": ["angry"], "seconds": 1, "channel": [1]}]', '"channel" must be'),
    ('[{"labels": ["angery"], "seconds": 1}]', "unknown label 'angery'"),
])
def test_load_rules_clear_errors(tmp_path, content, message):
    p = tmp_path / "rules.json"
    p.write_text(content)
    with pytest.raises(UsageError, match=message) as exc:
        load_rules(p, labels=LABELS)
    assert str(p) in str(exc.value)  # the message names the file


def test_load_rules_missing_file(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        load_rules(tmp_path / "nope.json")
    with pytest.raises(UsageError, match="directory"):
        load_rules(tmp_path)


# ------------------------------------------------------------------------------------ tracking

def test_fires_once_when_long_enough():
    rule = parse_rule("angry,fearful>4")
    alerts = run([rule], windows("nnaafaaaann"))
    # The stretch starts at 2 s; the window ending at 6 s makes it 4 s long.
    assert alerts == [{"type": "alert", "start": 2.0, "end": 6.0, "channel": 0, "channel_name": "mix",
                       "rule": "angry|fearful >4s", "label": "angry"}]


def test_does_not_fire_when_too_short_or_interrupted():
    rule = parse_rule("angry>4")
    assert run([rule], windows("aaannaaa")) == []  # 3 s, then another emotion, then 3 s
    assert run([rule], windows("aaa")) == []


def test_fires_again_for_a_new_stretch():
    alerts = run([parse_rule("angry>2")], windows("aaaaanaa"))
    assert [(a["start"], a["end"]) for a in alerts] == [(0.0, 2.0), (6.0, 8.0)]


def test_short_silence_inside_a_stretch_is_allowed():
    rule = parse_rule("angry>6")
    alerts = run([rule], windows("aaa__aaa"))  # a 2 s silence: the default max_gap_s
    assert [(a["start"], a["end"]) for a in alerts] == [(0.0, 6.0)]


def test_long_silence_breaks_the_stretch():
    rule = parse_rule("angry>6")
    assert run([rule], windows("aaa___aaa")) == []  # a 3 s silence is longer than 2 s
    loose = AlertRule("loose", None, frozenset({"angry"}), 6, max_gap_s=3.0)
    assert len(run([loose], windows("aaa___aaa"))) == 1


def test_gap_measured_in_hops_with_overlapping_windows():
    # 3 s windows every 1 s: two silent hops are a 2 s silence, allowed; three are not.
    rule = parse_rule("angry>6")
    ok = run([rule], windows("aa__aa", window=3.0))
    assert [(a["start"], a["end"]) for a in ok] == [(0.0, 7.0)]
    assert run([rule], windows("aa___a", window=3.0)) == []


def test_label_is_the_most_frequent_in_the_stretch():
    alerts = run([parse_rule("angry,fearful,sad>5")], windows("afffsa"))
    assert alerts[0]["label"] == "fearful"


def test_per_channel_rule_by_name_and_index():
    agent = windows("aaaaaa", channel=0, name="agent")
    customer = windows("aaaaaa", channel=1, name="customer")
    events = [e for pair in zip(agent, customer) for e in pair]
    by_name = run([parse_rule("customer:angry>3")], events)
    assert [(a["channel"], a["channel_name"]) for a in by_name] == [(1, "customer")]
    by_index = run([parse_rule("0:angry>3")], events)
    assert [(a["channel"], a["channel_name"]) for a in by_index] == [(0, "agent")]


def test_any_channel_rule_tracks_each_channel_apart():
    # Anger passes from one channel to the other and back: 0-7 s without a break taken together,
    # but neither channel holds it for 4 s (the agent's 3 s silence breaks the agent's stretch).
    agent = windows("aa___aa", channel=0, name="agent")
    customer = windows("__aaa__", channel=1, name="customer")
    events = [e for pair in zip(agent, customer) for e in pair]
    assert run([parse_rule("angry>4")], events) == []
    # Both channels angry long enough: one alert each.
    agent = windows("aaaa", channel=0, name="agent")
    customer = windows("naaaaa", channel=1, name="customer")
    events = [e for pair in zip(agent, customer) for e in pair] + customer[4:]
    alerts = run([parse_rule("angry>4")], events)
    assert [(a["channel_name"], a["start"], a["end"]) for a in alerts] == \
        [("agent", 0.0, 4.0), ("customer", 1.0, 5.0)]


def test_several_rules_and_other_events_ignored():
    rules = [parse_rule("angry>2"), parse_rule("angry,sad>5"), parse_rule("happy>1")]
    events = windows("aaasss")
    events.insert(3, {"type": "segment", "start": 0.0, "end": 3.0, "channel": 0, "label": "angry"})
    alerts = run(rules, events)
    assert [(a["rule"], a["end"]) for a in alerts] == [("angry >2s", 2.0), ("angry|sad >5s", 5.0)]


def test_zero_seconds_fires_on_first_window_and_reset():
    tracker = AlertTracker([parse_rule("sad>0")])
    first = tracker.update(windows("s")[0])
    assert len(first) == 1 and first[0]["end"] == 1.0
    assert tracker.update(windows("ss")[1]) == []  # same stretch
    tracker.reset()
    assert len(tracker.update(windows("ss")[1])) == 1


def test_timeline_emits_alerts_after_their_window():
    """The timeline calls the tracker with each smoothed window and passes its alerts on."""
    import numpy as np
    from streamer.timeline import Timeline

    tl = Timeline(LABELS, ["agent", "customer"], window_s=1.0, hop_s=1.0,
                  alert_rules=[parse_rule("customer:angry>4")])
    angry = np.eye(len(LABELS))[LABELS.index("angry")]
    events: list[dict[str, Any]] = []
    for t in range(8):
        events += tl.add(0, float(t), t + 1.0, True, angry)  # the agent is angry too: not watched
        events += tl.add(1, float(t), t + 1.0, True, angry)
    alerts = [e for e in events if e["type"] == "alert"]
    assert [(a["channel_name"], a["start"], a["end"], a["label"]) for a in alerts] == \
        [("customer", 0.0, 4.0, "angry")]
    i = events.index(alerts[0])
    assert events[i - 1]["type"] == "window" and events[i - 1]["end"] == 4.0


def test_hop_spans_line_up_with_segments():
    # 3 s windows every 1 s: with hop_s each window stands for the 1 s at its centre, so five
    # angry windows after a silent one make 2-7 s (5 hops), where a segment would put them.
    tracker = AlertTracker([parse_rule("angry>5")], hop_s=1.0)
    alerts = [a for ev in windows("_aaaaa", window=3.0) for a in tracker.update(ev)]
    assert [(a["start"], a["end"]) for a in alerts] == [(2.0, 7.0)]
    # The first window of a channel owns everything before its centre, as in the timeline.
    tracker = AlertTracker([parse_rule("angry>3")], hop_s=1.0)
    alerts = [a for ev in windows("aa", window=3.0) for a in tracker.update(ev)]
    assert [(a["start"], a["end"]) for a in alerts] == [(0.0, 3.0)]


# -- rules that can never fire are refused (issue 16) --------------------------------------------

def test_unknown_labels_are_refused_when_the_model_labels_are_given(tmp_path):
    with pytest.raises(UsageError, match="unknown label 'nosuchlabel'"):
        parse_rule("nosuchlabel>5", LABELS)
    f = tmp_path / "rules.json"
    f.write_text(json.dumps([{"labels": ["angry", "furious"], "seconds": 3}]))
    with pytest.raises(UsageError, match="rule 1: unknown label 'furious'"):
        load_rules(f, LABELS)


def test_unknown_channels_are_refused():
    from streamer.alerts import check_channels

    names = ["agent", "customer"]
    check_channels([parse_rule("customer:angry>5"), parse_rule("1:sad>5"), parse_rule("angry>5")], names)
    with pytest.raises(UsageError, match="no channel 'boss'.*agent, customer"):
        check_channels([parse_rule("boss:angry>5")], names)
    with pytest.raises(UsageError, match="no channel 2"):
        check_channels([parse_rule("2:angry>5")], names)
    with pytest.raises(UsageError, match="--channel-names"):
        check_channels([parse_rule("customer:angry>5")], ["mix"])
