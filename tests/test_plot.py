"""The PNG timeline: it exists, has the promised size, and shows the segments in their colours."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

from streamer.plot import (FALLBACK_COLOURS, LABEL_COLOURS, SILENCE_COLOUR, label_colours, plot_timeline,
                           plot_title, tick_step)

LABELS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]

EVENTS = [
    {"type": "window", "start": 0.0, "end": 1.0, "channel": 0, "channel_name": "agent",
     "speech": True, "label": "happy", "confidence": 0.9, "probs": None},
    {"type": "segment", "start": 0.0, "end": 30.0, "channel": 0, "channel_name": "agent",
     "label": "happy", "confidence": 0.9},
    {"type": "segment", "start": 40.0, "end": 60.0, "channel": 1, "channel_name": "customer",
     "label": "angry", "confidence": 0.8},
    {"type": "alert", "start": 40.0, "end": 50.0, "channel": 1, "channel_name": "customer",
     "rule": "customer angry >10s", "label": "angry"},
]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def test_colours_cover_the_labels():
    assert set(LABEL_COLOURS) == set(LABELS)
    assert len(set(LABEL_COLOURS.values())) == len(LABELS)  # every emotion its own colour
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in LABEL_COLOURS.values())
    other = label_colours(["happy", "bored", "excited"])
    assert other == {"happy": LABEL_COLOURS["happy"], "bored": FALLBACK_COLOURS[0],
                     "excited": FALLBACK_COLOURS[1]}


def test_plot_size_and_pixels(tmp_path):
    import matplotlib.image as image
    path = tmp_path / "call.png"
    assert plot_timeline(EVENTS, 60.0, path, LABELS, title="call.wav") == str(path)
    assert png_size(path) == (1200, 140 + 90 * 2)
    px = (image.imread(path)[:, :, :3] * 255).round().astype(int)
    assert len({tuple(p) for p in px.reshape(-1, 3)[::7]}) > 5  # not blank
    colours = {tuple(p) for p in px.reshape(-1, 3)}
    assert rgb(LABEL_COLOURS["happy"]) in colours and rgb(LABEL_COLOURS["angry"]) in colours

    # Below the legend (top 75 px): the agent's happy bar on top, over the first half of the axis;
    # the customer's angry bar under it, over the second half.
    area = px[75:]
    happy_y, happy_x = (area == rgb(LABEL_COLOURS["happy"])).all(axis=2).nonzero()
    angry_y, angry_x = (area == rgb(LABEL_COLOURS["angry"])).all(axis=2).nonzero()
    assert len(happy_y) > 1000 and len(angry_y) > 1000
    assert happy_y.max() < angry_y.min()  # the first channel is drawn above the second
    # 0-30 s and 40-60 s of 60 s, on an axis from x=90 px that leaves 20 px on the right.
    x_of = lambda t: 90 + (1200 - 110) * t / 60.0  # noqa: E731
    assert x_of(0) - 2 <= happy_x.min() and happy_x.max() <= x_of(30) + 2
    assert x_of(40) - 2 <= angry_x.min() and angry_x.max() <= x_of(60) + 2
    # silence is drawn as on the page: the agent after 30 s, the customer before 40 s
    quiet_y, quiet_x = (area == rgb(SILENCE_COLOUR)).all(axis=2).nonzero()
    agent_q = quiet_x[quiet_y <= happy_y.max()]
    cust_q = quiet_x[quiet_y >= angry_y.min()]
    assert len(agent_q) > 1000 and len(cust_q) > 1000
    assert agent_q.min() >= x_of(30) - 2 and agent_q.max() <= x_of(60) + 2
    assert cust_q.min() >= x_of(0) - 2 and cust_q.max() <= x_of(40) + 2
    assert not set(zip(happy_y, happy_x)) & set(zip(quiet_y, quiet_x))


def test_title_and_ticks_on_whole_seconds_or_minutes(tmp_path):
    assert plot_title("/calls/2024/call.wav", 62.4) == "call.wav \u00b7 1:02 (62.4 s)"
    assert plot_title("long.flac", 3 * 3600.0) == "long.flac \u00b7 3:00:00 (10800.0 s)"
    # at most 12 ticks, on round steps: whole seconds for short calls, whole minutes for long ones
    assert [tick_step(t) for t in (5, 30, 62.4, 300, 1000, 3600, 3 * 3600, 30 * 3600)] == \
        [1, 5, 10, 30, 120, 300, 900, 14400]
    # the title is drawn: the same plot with and without it differs only in the title's band
    import matplotlib.image as image
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    plot_timeline(EVENTS, 60.0, a, LABELS, source="/x/call.wav")
    plot_timeline(EVENTS, 60.0, b, LABELS, title="")
    pa, pb = image.imread(a), image.imread(b)
    diff = (abs(pa - pb).sum(axis=2) > 0).nonzero()[0]
    assert len(diff) > 50 and diff.min() >= 40 and diff.max() <= 80


def test_plot_custom_size_long_call_and_nothing_to_draw(tmp_path):
    path = tmp_path / "long.png"
    plot_timeline(EVENTS, 3 * 3600.0, path, LABELS, width_px=800, row_px=60)
    assert png_size(path) == (800, 140 + 60 * 2)
    empty = tmp_path / "empty.png"
    plot_timeline([], None, empty, LABELS)  # nothing heard: still a picture with one row
    assert png_size(empty) == (1200, 140 + 90)


def test_import_does_not_load_matplotlib():
    code = "import sys, streamer.plot; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
