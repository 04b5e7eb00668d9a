"""Review clips: every alert's whole stretch, cut out of the real recording with 1 s margins.

The recordings are made here: each sample's value says where in the file it is (10 ms steps), so a
clip's first and last samples tell exactly which span of the recording it holds.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamer.alerts import AlertTracker, parse_rule
from streamer.clips import Clip, alert_stretches, plan_clips, read_span, write_clips
from streamer.errors import UsageError
from streamer.sources import open_source

RATE = 8000


def _marked(seconds: float, channels: int = 2) -> np.ndarray:
    """int16 audio whose value is the time in 10 ms steps (channel c adds c * 10000)."""
    n = int(seconds * RATE)
    t = (np.arange(n) // (RATE // 100)).astype(np.int16)
    return np.stack([t + np.int16(10000 * c) for c in range(channels)], axis=1)


def _windows(labels: dict[int, str], n: int, channel: int = 1, name: str = "customer") -> list[dict]:
    """3 s windows every 1 s on one channel; ``labels`` maps window index -> label (else neutral)."""
    return [{"type": "window", "start": float(k), "end": float(k + 3), "channel": channel, "channel_name": name,
             "speech": True, "label": labels.get(k, "neutral"), "confidence": 0.9, "probs": None}
            for k in range(n)]


def test_a_stretch_is_followed_past_the_moment_it_fired():
    # angry windows 5..17: each window owns the 1 s at its centre, so the stretch is 6-19 s; a 5 s
    # rule fires at 6-11 and the clip must run to 19
    wins = _windows({k: "angry" for k in range(5, 18)}, 30)
    rule = parse_rule("customer:angry>5")
    tracker = AlertTracker([rule], hop_s=1.0)
    fired = [a for w in wins for a in tracker.update(w)]
    assert [(a["start"], a["end"]) for a in fired] == [(6.0, 11.0)]
    got = alert_stretches(wins, [rule])   # the hop is read from the windows
    assert len(got) == 1
    assert {k: v for k, v in got[0].items() if k != "end"} == {k: v for k, v in fired[0].items() if k != "end"}
    assert got[0]["end"] == 19.0
    # typed events (anything with to_wire) are read the same way
    class Ev:
        def __init__(self, d):
            self.d = d

        def to_wire(self):
            return self.d
    assert alert_stretches([Ev(w) for w in wins], [rule], hop_s=1.0) == got


def test_silence_inside_a_stretch_is_allowed_and_a_second_stretch_gets_its_own_clip():
    labels = {k: "angry" for k in range(2, 9)}            # stretch one: 3-10
    wins = _windows(labels, 40)
    for k in (9, 10):                                      # 2 s of silence: still the same stretch
        wins[k].update(speech=False, label=None, confidence=None)
    labels2 = {k: "angry" for k in range(11, 14)}
    for k in labels2:
        wins[k]["label"] = "angry"                          # ... which goes on to 15
    for k in range(25, 33):
        wins[k]["label"] = "fearful"                        # stretch two: 26-34
    rule = parse_rule("customer:angry,fearful>4")
    got = alert_stretches(wins, [rule], hop_s=1.0)
    assert [(a["start"], a["end"], a["label"]) for a in got] == [(3.0, 15.0, "angry"), (26.0, 34.0, "fearful")]
    clips = plan_clips(got, duration=33.0)
    assert [(c.start, c.end) for c in clips] == [(2.0, 16.0), (25.0, 33.0)]   # the end is clipped to the file
    assert clips[0].file_name() == "2.0-16.0-customer-angry.wav"
    assert clips[1].file_name("mp3") == "25.0-33.0-customer-fearful.mp3"
    # a stretch at the very start: the margin stops at 0; the same clip from two rules is cut once
    twice = [{"start": 0.5, "end": 4.0, "channel": 1, "channel_name": "customer", "label": "angry", "rule": r}
             for r in ("a", "b")]
    assert [(c.start, c.end) for c in plan_clips(twice, 60.0)] == [(0.0, 5.0)]
    # a channel name is never a path
    assert Clip(0, 1, 0, 1, 0, "../etc/pass wd", "angry", "r").file_name() == "0.0-1.0-_etc_pass_wd-angry.wav"


@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_read_span_reads_exactly_the_span(tmp_path, ext):
    path = tmp_path / f"call.{ext}"
    sf.write(path, _marked(30.0), RATE, subtype="PCM_16")
    seg = read_span(path, 12.0, 15.5)
    assert (seg.frame_rate, seg.channels, seg.sample_width) == (RATE, 2, 2)
    x = np.frombuffer(seg.raw_data, dtype="<i2").reshape(-1, 2)
    assert len(x) == int(3.5 * RATE)
    assert list(x[0]) == [1200, 11200] and list(x[-1]) == [1549, 11549]


def test_write_clips_wav_and_mp3_from_a_compressed_recording(tmp_path):
    wav = tmp_path / "call.wav"
    sf.write(wav, _marked(20.0), RATE, subtype="PCM_16")
    clips = plan_clips([{"start": 4.0, "end": 9.0, "channel": 1, "channel_name": "customer",
                         "label": "angry", "rule": "r"}], 20.0)
    out = tmp_path / "clips"                               # created on demand
    [written] = write_clips(wav, clips, out)
    assert Path(written).name == "3.0-10.0-customer-angry.wav"
    y, sr = sf.read(written, dtype="int16")
    assert sr == RATE and y.shape == (7 * RATE, 2)
    assert list(y[0]) == [300, 10300] and list(y[-1]) == [999, 10999]
    assert sorted(p.name for p in out.iterdir()) == ["3.0-10.0-customer-angry.wav"]   # no temporary left

    # an MP3 recording (read through the ffmpeg pipe, from the span on) to an MP3 clip
    mp3 = tmp_path / "call.mp3"
    ffmpeg("-i", str(wav), "-b:a", "64k", str(mp3))
    seg = read_span(mp3, 3.0, 10.0)
    assert seg.frame_rate == RATE and seg.channels == 2
    assert abs(len(seg) / 1000 - 7.0) < 0.05
    [m] = write_clips(mp3, clips, out, fmt="mp3")
    assert Path(m).name == "3.0-10.0-customer-angry.mp3"
    with open_source(m) as src:
        assert src.channels == 2 and src.duration is not None and abs(src.duration - 7.0) < 0.15

    with pytest.raises(UsageError, match="clips-format"):
        write_clips(wav, clips, out, fmt="ogg")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        write_clips(wav, clips, tmp_path / "afile")


from tests.conftest import FIXTURES, emostream, ffmpeg


def _emostream(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The command line run from ``cwd`` (conftest's :func:`emostream`), its output as text."""
    r = emostream(*args, cwd=cwd, timeout=300)
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(), r.stderr.decode())


def test_label_clips_cuts_every_alert_out_of_the_recording(tmp_path):
    """`emostream label --clips`: one clip per alert, holding exactly the recording's audio there."""
    import json

    happy, sr = sf.read(FIXTURES / "03-01-03-02-02-01-05.flac", dtype="int16")
    angry, _ = sf.read(FIXTURES / "03-01-05-02-01-01-01.flac", dtype="int16")
    pause = np.zeros(sr, np.int16)
    agent = np.concatenate([pause, happy, pause, np.zeros(len(angry), np.int16), pause])
    customer = np.concatenate([pause, np.zeros(len(happy), np.int16), pause, angry, pause])
    call = tmp_path / "call.flac"
    sf.write(call, np.stack([agent, customer], axis=1), sr, subtype="PCM_16")
    out = tmp_path / "review"
    r = _emostream("label", str(call), "--channels", "split", "--channel-names", "agent,customer",
                   "--alert", "customer:angry,fearful,disgust>1", "--clips", str(out), "-o", str(tmp_path / "t.json"),
                   cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "t.json").read_text())
    assert res["alerts"], "the angry customer should raise an alert"
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == len({(a["start"], a["channel"], a["label"]) for a in res["alerts"]})
    rec, _ = sf.read(call, dtype="int16")
    for a in res["alerts"]:
        [name] = [n for n in names if n.startswith(f"{max(0.0, a['start'] - 1):.1f}-")]
        start, end, who, label = name[:-4].split("-")
        assert (who, label) == ("customer", a["label"])
        # the whole stretch: at least to the alert's end, never past the customer's speech + 2 s
        assert float(end) >= min(a["end"] + 1, res["duration"]) - 0.05
        assert float(end) <= min((len(rec) - len(pause)) / sr + 3.0, res["duration"]) + 0.05
        clip, csr = sf.read(out / name, dtype="int16")
        assert csr == sr and clip.shape[1] == 2
        a0 = int(round(float(start) * sr))
        assert np.array_equal(clip, rec[a0:a0 + len(clip)])
        assert abs(len(clip) / sr - (float(end) - float(start))) < 0.051
    assert "review clip" in r.stderr

    # refused before any work: no rules, stdin, a file in the way
    r = _emostream("label", str(call), "--clips", str(out), cwd=tmp_path)
    assert r.returncode != 0 and r.stderr.startswith("emostream: error: --clips needs alert rules")
    (tmp_path / "f").write_text("x")
    r = _emostream("label", str(call), "--alert", "angry>1", "--clips", str(tmp_path / "f"), cwd=tmp_path)
    assert r.returncode != 0 and "not a directory" in r.stderr and "Traceback" not in r.stderr
