"""Every output format written from a constructed timeline and parsed back."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from typing import Any

import numpy as np
import pytest

from streamer.errors import UsageError
from streamer.events import Alert, Event, Segment, Window
from streamer.formats import EXTENSIONS, FORMATS, Writer, open_writer

LABELS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
NAMES = ["agent", "customer"]
DURATION = 10.0

# One character per second and channel: a label's first letter, "_" for silence.
TRACKS = {0: "hhh__nnnnn", 1: "aaaa__ss__"}
CODES = {"h": "happy", "n": "neutral", "a": "angry", "s": "sad"}
# The segments those tracks make, with the confidences the builder gives them.
SEGMENTS = [
    (0, 0.0, 3.0, "happy"), (1, 0.0, 4.0, "angry"), (0, 5.0, 10.0, "neutral"), (1, 6.0, 8.0, "sad"),
]
ALERT = {"type": "alert", "start": 0.0, "end": 3.0, "channel": 1, "channel_name": "customer",
         "rule": "customer angry >3s", "label": "angry"}


def probs_for(label: str) -> dict[str, float]:
    p = {lb: 0.02 for lb in LABELS}
    p[label] = 1.0 - 0.02 * (len(LABELS) - 1)
    return p


def build_events() -> list[Event]:
    """Window, segment and alert events in the order a timeline emits them (windows by time,
    channels interleaved; a segment when it closes; an alert just after its window)."""
    events: list[Event] = []
    closes = {(ch, end): (ch, a, end, lb) for ch, a, end, lb in SEGMENTS}
    for t in range(int(DURATION)):
        for ch, track in TRACKS.items():
            code = track[t]
            label = CODES.get(code)
            events.append(Window(
                start=float(t), end=float(t + 1), channel=ch, channel_name=NAMES[ch],
                speech=label is not None, label=label,
                confidence=None if label is None else probs_for(label)[label],
                probs=None if label is None else probs_for(label),
                raw=np.zeros(len(LABELS), dtype=np.float32),  # in-process only, never written
            ))
            if (ch, float(t + 1)) in closes:
                c, a, e, lb = closes[(ch, float(t + 1))]
                events.append(Segment(start=a, end=e, channel=c, channel_name=NAMES[c], label=lb,
                                      confidence=0.86))
            if ch == 1 and t + 1 == 3:
                events.append(Alert(**{k: v for k, v in ALERT.items() if k != "type"}))
    return events


def header(duration: float | None = DURATION) -> dict[str, Any]:
    return {"source": "call.wav", "duration": duration, "sample_rate": 8000,
            "model": {"name": "emotion-cnn", "version": "1.0", "labels": LABELS}, "channels": NAMES}


def write(fmt: str, events: list[Any] | None = None, duration: float | None = DURATION,
          close_duration: float | None = None) -> str:
    buf = io.StringIO()
    w = open_writer(fmt, buf)
    w.header(header(duration))
    for ev in events if events is not None else build_events():
        w.event(ev)
    w.close(duration=close_duration)
    w.close()  # twice is harmless
    return buf.getvalue()


# ---------------------------------------------------------------------------- parsers (tests only)

_VTT_TIME = r"(\d{2}):(\d{2}):(\d{2})\.(\d{3})"
_SRT_TIME = r"(\d{2}):(\d{2}):(\d{2}),(\d{3})"


def _secs(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def parse_vtt(text: str) -> list[tuple[float, float, str]]:
    """Cues of a WebVTT file (NOTE blocks skipped); asserts the header and the timing lines."""
    blocks = text.strip("\n").split("\n\n")
    assert blocks[0] == "WEBVTT"
    cues = []
    for block in blocks[1:]:
        lines = block.split("\n")
        if lines[0].startswith("NOTE"):
            assert "-->" not in block
            continue
        m = re.fullmatch(_VTT_TIME + " --> " + _VTT_TIME, lines[0])
        assert m, lines[0]
        g = m.groups()
        cues.append((_secs(*g[:4]), _secs(*g[4:]), "\n".join(lines[1:])))
    return cues


def parse_srt(text: str) -> list[tuple[float, float, str]]:
    """Cues of an SRT file; asserts numbering from 1 and the timing lines."""
    cues = []
    for i, block in enumerate(text.strip("\n").split("\n\n"), 1):
        lines = block.split("\n")
        assert lines[0] == str(i)
        m = re.fullmatch(_SRT_TIME + " --> " + _SRT_TIME, lines[1])
        assert m, lines[1]
        g = m.groups()
        cues.append((_secs(*g[:4]), _secs(*g[4:]), "\n".join(lines[2:])))
    return cues


def parse_audacity(text: str) -> list[tuple[float, float, str]]:
    out = []
    for line in text.splitlines():
        a, b, label = line.split("\t")
        assert re.fullmatch(r"\d+\.\d{6}", a) and re.fullmatch(r"\d+\.\d{6}", b)
        out.append((float(a), float(b), label))
    return out


def parse_textgrid(text: str) -> dict[str, Any]:
    """A long-format TextGrid: {"xmin", "xmax", "tiers": [{"class", "name", "xmin", "xmax",
    "intervals": [(xmin, xmax, text)]}]}; asserts declared sizes match."""
    lines = text.splitlines()
    assert lines[0] == 'File type = "ooTextFile"'
    assert lines[1] == 'Object class = "TextGrid"'
    grid: dict[str, Any] = {"tiers": []}
    tier: dict[str, Any] | None = None
    interval: dict[str, Any] | None = None
    for raw in lines[2:]:
        line = raw.strip()
        if not line or line == "item []:":
            continue
        if line == "tiers? <exists>":
            grid["exists"] = True
            continue
        if re.fullmatch(r"item \[\d+\]:", line):
            tier = {"intervals": []}
            interval = None
            grid["tiers"].append(tier)
            continue
        if re.fullmatch(r"intervals \[\d+\]:", line):
            interval = {}
            assert tier is not None
            tier["intervals"].append(interval)
            continue
        m = re.fullmatch(r"intervals: size = (\d+)", line)
        if m:
            assert tier is not None
            tier["size"] = int(m.group(1))
            continue
        m = re.fullmatch(r'(\w+) = (".*"|[-\d.e]+)', line)
        assert m, f"unexpected TextGrid line: {raw!r}"
        key, val = m.groups()
        value: Any = val[1:-1].replace('""', '"') if val.startswith('"') else float(val)
        target = interval if interval is not None else tier if tier is not None else grid
        target[key] = value
    assert grid["size"] == len(grid["tiers"])
    for t in grid["tiers"]:
        assert t["size"] == len(t["intervals"])
        t["intervals"] = [(iv["xmin"], iv["xmax"], iv["text"]) for iv in t["intervals"]]
    return grid


# ---------------------------------------------------------------------------------------- tests

def test_open_writer_every_format_and_unknown():
    assert set(FORMATS) == set(EXTENSIONS)
    for fmt in FORMATS:
        assert isinstance(open_writer(fmt, io.StringIO()), Writer)
    with pytest.raises(UsageError, match="unknown format"):
        open_writer("docx", io.StringIO())


def test_json_schema():
    obj = json.loads(write("json"))
    assert {"source", "duration", "sample_rate", "model", "windows", "segments", "alerts"} <= set(obj)
    assert obj["source"] == "call.wav" and obj["duration"] == DURATION and obj["sample_rate"] == 8000
    assert obj["model"] == {"name": "emotion-cnn", "version": "1.0", "labels": LABELS}
    assert obj["channels"] == NAMES
    assert len(obj["windows"]) == 2 * int(DURATION)
    for w in obj["windows"]:
        assert set(w) == {"start", "end", "channel", "channel_name", "speech", "label", "confidence",
                          "probs"}  # no "type", no in-process "raw"
        assert w["channel_name"] == NAMES[w["channel"]]
        if w["speech"]:
            assert w["label"] in LABELS and set(w["probs"]) == set(LABELS)
            assert w["confidence"] == pytest.approx(w["probs"][w["label"]])
        else:
            assert w["label"] is None and w["confidence"] is None and w["probs"] is None
    silent = [(w["channel"], w["start"]) for w in obj["windows"] if not w["speech"]]
    assert silent == [(0, 3.0), (0, 4.0), (1, 4.0), (1, 5.0), (1, 8.0), (1, 9.0)]
    segs = [(s["channel"], s["start"], s["end"], s["label"]) for s in obj["segments"]]
    assert sorted(segs) == sorted(SEGMENTS)
    assert all(set(s) == {"start", "end", "channel", "channel_name", "label", "confidence"}
               for s in obj["segments"])
    assert obj["alerts"] == [{k: v for k, v in ALERT.items() if k != "type"}]


def test_json_duration_at_close_and_numpy_values():
    evs = build_events()
    for i, ev in enumerate(evs):  # values straight from numpy must still serialise
        if isinstance(ev, Window) and ev.speech:
            evs[i] = dataclasses.replace(ev, confidence=np.float32(ev.confidence), start=np.float64(ev.start),
                                         speech=np.bool_(True))
    obj = json.loads(write("json", evs, duration=None, close_duration=12.5))
    assert obj["duration"] == 12.5
    assert isinstance(obj["windows"][0]["confidence"], float)
    # Without any duration the latest end seen stands in.
    assert json.loads(write("json", evs, duration=None))["duration"] == DURATION


def test_json_empty_timeline():
    obj = json.loads(write("json", []))
    assert obj["windows"] == [] and obj["segments"] == [] and obj["alerts"] == []


def test_jsonl_lines_and_flush_as_produced():
    text = write("jsonl")
    rows = [json.loads(line) for line in text.splitlines()]
    assert rows[0]["type"] == "header" and rows[0]["channels"] == NAMES
    assert rows[0]["model"]["labels"] == LABELS
    assert rows[-1] == {"type": "end", "duration": DURATION}
    body = rows[1:-1]
    assert [r["type"] for r in body].count("window") == 2 * int(DURATION)
    assert [r["type"] for r in body].count("segment") == len(SEGMENTS)
    assert [r for r in body if r["type"] == "alert"] == [ALERT]
    assert all("raw" not in r for r in body)

    # Every event is on disk the moment it is written: a crash before close loses nothing.
    class Recorder(io.StringIO):
        flushed: list[str] = []

        def flush(self) -> None:
            self.flushed.append(self.getvalue())
            super().flush()

    buf = Recorder()
    w = open_writer("jsonl", buf)
    w.header(header())
    for i, ev in enumerate(build_events()[:5], 1):
        w.event(ev)
        assert buf.flushed[-1].count("\n") == i + 1  # header + i events, all complete lines
    [json.loads(line) for line in buf.flushed[-1].splitlines()]


def test_csv_columns_rows_and_alert_column():
    rows = list(csv.DictReader(io.StringIO(write("csv"))))
    with io.StringIO(write("csv")) as f:
        columns = next(csv.reader(f))
    assert columns == ["start", "end", "channel", "channel_name", "speech", "label", "confidence",
                       *[f"p_{lb}" for lb in LABELS], "alert", "band"]
    assert len(rows) == 2 * int(DURATION)
    assert {r["band"] for r in rows} == {""}  # these windows carry no band
    # Rows keep the order windows arrived in.
    assert [(float(r["start"]), int(r["channel"])) for r in rows] == \
        [(float(t), ch) for t in range(int(DURATION)) for ch in (0, 1)]
    for r in rows:
        ch, t = int(r["channel"]), int(float(r["start"]))
        label = CODES.get(TRACKS[ch][t])
        assert r["channel_name"] == NAMES[ch]
        assert r["speech"] == ("true" if label else "false")
        assert r["label"] == (label or "")
        if label:
            probs = {lb: float(r[f"p_{lb}"]) for lb in LABELS}
            assert sum(probs.values()) == pytest.approx(1.0, abs=1e-3)
            assert float(r["confidence"]) == pytest.approx(probs[label])
        else:
            assert r["confidence"] == "" and all(r[f"p_{lb}"] == "" for lb in LABELS)
        fired = ch == 1 and t == 2  # the window ending at 3 s
        assert r["alert"] == ("customer angry >3s" if fired else "")


def test_csv_alert_before_its_window_and_two_alerts():
    evs = [e for e in build_events() if e["type"] != "alert"]
    # Put two alerts just before the customer's window 2-3 s instead of after it.
    i = next(k for k, e in enumerate(evs)
             if e["type"] == "window" and e["channel"] == 1 and e["start"] == 2.0)
    evs[i:i] = [dict(ALERT), {**ALERT, "rule": "any angry >2s"}]
    rows = list(csv.DictReader(io.StringIO(write("csv", evs))))
    fired = {(int(r["channel"]), float(r["start"])): r["alert"] for r in rows if r["alert"]}
    assert fired == {(1, 2.0): "customer angry >3s;any angry >2s"}


def expected_cues() -> list[tuple[float, float, str]]:
    return sorted(((a, e, f"{NAMES[ch]}: {lb} (0.86)") for ch, a, e, lb in SEGMENTS),
                  key=lambda c: c[0])


def test_vtt_cues_exact():
    text = write("vtt")
    assert text.startswith("WEBVTT\n\n")
    assert parse_vtt(text) == expected_cues()
    assert "00:00:05.000 --> 00:00:10.000\nagent: neutral (0.86)" in text


def test_srt_cues_exact():
    text = write("srt")
    assert parse_srt(text) == expected_cues()
    assert "3\n00:00:05,000 --> 00:00:10,000\nagent: neutral (0.86)\n" in text


def test_subtitle_timestamps_past_an_hour_and_mix_channel():
    seg = {"type": "segment", "start": 3661.007, "end": 3723.5, "channel": 0, "channel_name": "mix",
           "label": "sad", "confidence": 0.5049}
    silence = {**seg, "start": 3723.5, "end": 3730.0, "label": None, "confidence": None}
    vtt = write("vtt", [seg, silence], duration=3730.0)
    assert "01:01:01.007 --> 01:02:03.500\nsad (0.50)\n" in vtt  # no "mix:" prefix
    assert parse_vtt(vtt) == [(3661.007, 3723.5, "sad (0.50)")]  # silence has no cue
    assert parse_srt(write("srt", [seg, silence])) == [(3661.007, 3723.5, "sad (0.50)")]


def test_audacity_label_track():
    assert parse_audacity(write("audacity")) == [
        (a, e, f"{NAMES[ch]}: {lb}") for ch, a, e, lb in sorted(SEGMENTS, key=lambda s: s[1])]


def test_textgrid_structure():
    grid = parse_textgrid(write("textgrid"))
    assert grid["xmin"] == 0 and grid["xmax"] == DURATION and grid.get("exists")
    assert [t["name"] for t in grid["tiers"]] == NAMES
    assert all(t["class"] == "IntervalTier" for t in grid["tiers"])
    assert grid["tiers"][0]["intervals"] == [(0, 3, "happy"), (3, 5, ""), (5, 10, "neutral")]
    assert grid["tiers"][1]["intervals"] == [(0, 4, "angry"), (4, 6, ""), (6, 8, "sad"),
                                             (8, 10, "")]
    for t in grid["tiers"]:
        assert t["xmin"] == 0 and t["xmax"] == DURATION
        ivs = t["intervals"]
        assert ivs[0][0] == 0 and ivs[-1][1] == DURATION
        assert all(a[1] == b[0] for a, b in zip(ivs, ivs[1:]))  # contiguous, no overlap


def test_textgrid_duration_at_close_empty_channel_and_quotes():
    evs = [{"type": "segment", "start": 1.5, "end": 2.25, "channel": 0, "channel_name": "agent",
            "label": 'say "hi"', "confidence": 0.9}]
    grid = parse_textgrid(write("textgrid", evs, duration=None, close_duration=4.0))
    assert grid["xmax"] == 4.0
    agent, customer = grid["tiers"]  # a channel with no segment still gets its (empty) tier
    assert agent["intervals"] == [(0, 1.5, ""), (1.5, 2.25, 'say "hi"'), (2.25, 4.0, "")]
    assert customer["name"] == "customer" and customer["intervals"] == [(0, 4.0, "")]


def test_a_malformed_event_dict_is_a_value_error():
    w = open_writer("csv", io.StringIO())
    w.header(header())
    with pytest.raises(ValueError, match="window event lacks"):
        w.event({"type": "window", "start": 0.0})
    w.event({"type": "hello", "labels": LABELS})  # not a row: ignored
