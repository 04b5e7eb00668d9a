"""The Python API: streamer.load_model / label / stream, the objects the command line uses."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile as sf

import streamer
from streamer.errors import InputError, UsageError
from streamer.events import End, Hello, Segment, Window
from tests.conftest import EXAMPLE, ROOT, emostream, read_mono


@pytest.fixture(scope="module")
def api_model():
    return streamer.load_model()


@pytest.fixture(scope="module")
def stereo(tmp_path_factory, clips):
    """A two-channel call: angry speech on the right after a pause, sad on the left."""
    a, sr = read_mono(clips["sad"])
    b, _ = read_mono(clips["angry"])
    n = max(len(a), len(b)) + sr
    y = np.zeros((n, 2), np.float32)
    y[: len(a), 0] = a
    y[sr : sr + len(b), 1] = b
    path = tmp_path_factory.mktemp("api") / "call.wav"
    sf.write(path, y, sr)
    return path, y, sr


def test_import_streamer_loads_nothing_heavy():
    code = "import sys, streamer; print(sorted(m for m in ('numpy', 'streamer.api', 'streamer.labelling') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_label_to_dict_equals_the_command_line(stereo, api_model):
    path, _, _ = stereo
    args = ["--channels", "split", "--channel-names", "agent,customer", "--alert", "customer:angry>0.5"]
    p = emostream("label", str(path), "-f", "json", *args)
    assert p.returncode == 0, p.stderr.decode()
    tl = streamer.label(str(path), channels="split", channel_names=["agent", "customer"],
                        alerts=["customer:angry>0.5"], model=api_model)
    assert tl.to_dict() == json.loads(p.stdout)
    assert tl.channels == ["agent", "customer"] and tl.sample_rate == 16000
    assert tl.windows and all(isinstance(w, Window) for w in tl.windows)
    assert all(isinstance(s, Segment) for s in tl.segments)
    assert tl.alerts and [{k: v for k, v in a.to_wire().items() if k != "type"} for a in tl.alerts] == tl.to_dict()["alerts"]
    assert all(w.raw is not None for w in tl.windows if w.speech)  # the model's own output, in the process


def test_label_an_array_mono_or_channels_float_or_int(stereo, api_model):
    path, y, sr = stereo
    from_file = streamer.label(str(path), channels="split", model=api_model)
    from_array = streamer.label(y, sample_rate=sr, channels="split", model=api_model)
    assert from_array.windows == from_file.windows and from_array.source == "array"
    mono = streamer.label(y[:, 1], sample_rate=sr, model=api_model)
    assert mono.channels == ["mix"] and mono.duration == pytest.approx(len(y) / sr, abs=0.01)
    pcm = streamer.label((y[:, 1] * 32767).astype(np.int16), sample_rate=sr, model=api_model)
    assert [w.label for w in pcm.windows] == [w.label for w in mono.windows]
    label, conf, probs = streamer.label(str(path), model=api_model).overall()
    assert label in api_model.labels and 0 < conf <= 1 and label == max(probs, key=probs.get)


def test_write_every_format(tmp_path, api_model):
    tl = streamer.label(str(EXAMPLE), model=api_model)
    tl.write(tmp_path / "t.vtt")
    assert (tmp_path / "t.vtt").read_text().startswith("WEBVTT")
    tl.write(tmp_path / "t.TextGrid")
    assert "IntervalTier" in (tmp_path / "t.TextGrid").read_text()
    tl.write(tmp_path / "t.out", format="csv")
    assert (tmp_path / "t.out").read_text().startswith("start,end,channel")
    tl.write(tmp_path / "t.json")
    assert json.loads((tmp_path / "t.json").read_text()) == tl.to_dict()
    with pytest.raises(UsageError, match="format"):
        tl.write(tmp_path / "t.xyz")
    assert not (tmp_path / "t.xyz").exists()


def test_bad_input_raises_the_command_lines_errors(tmp_path, api_model):
    with pytest.raises(InputError):
        streamer.label(str(tmp_path / "missing.wav"), model=api_model)
    with pytest.raises(UsageError, match="sample_rate"):
        streamer.label(np.zeros(16000, np.float32), model=api_model)
    with pytest.raises(UsageError, match="sample_rate"):
        streamer.label(str(EXAMPLE), sample_rate=8000, model=api_model)
    with pytest.raises(UsageError, match="alert rule"):
        streamer.label(str(EXAMPLE), alerts=["angry>>"], model=api_model)
    with pytest.raises(UsageError, match="shape"):
        streamer.label(np.zeros((2, 2, 2), np.float32), sample_rate=8000, model=api_model)


def test_stream_a_file_gives_the_timeline_between_hello_and_end(api_model):
    tl = streamer.label(str(EXAMPLE), model=api_model)
    evs = list(streamer.stream(str(EXAMPLE), api_model))
    assert isinstance(evs[0], Hello) and evs[0].labels == tuple(api_model.labels)
    assert evs[0].source == tl.source and evs[0].channels == ("mix",)
    assert isinstance(evs[-1], End) and evs[-1].duration == tl.duration
    assert evs[1:-1] == tl.events


def test_leaving_a_stream_early_stops_its_thread(api_model):
    before = threading.active_count()
    for i, ev in enumerate(streamer.stream(str(EXAMPLE), api_model)):
        if i == 3:
            break
    # the generator is closed when the loop is left; its reader thread ends (bounded wait)
    for _ in range(100):
        if threading.active_count() <= before:
            break
        threading.Event().wait(0.1)
    assert threading.active_count() <= before


def _same_timeline(a, b):
    """Same events up to float rounding: blocks of other sizes batch the model differently."""
    assert [(e.type, e.start, e.get("label")) for e in a] == [(e.type, e.start, e.get("label")) for e in b]
    for x, y in zip(a, b):
        for k, p in (x.get("probs") or {}).items():
            assert abs(p - y.probs[k]) < 2e-3


def test_stream_async_pcm_blocks(api_model):
    y, sr = read_mono(EXAMPLE)
    y = y[: sr * 20]
    reference = streamer.label(y, sample_rate=sr, model=api_model)

    async def blocks(encoding):
        for i in range(0, len(y), 1234):  # odd-sized blocks, as a network delivers them
            blk = y[i : i + 1234]
            yield blk if encoding is None else blk.astype("<f4").tobytes()
            await asyncio.sleep(0)

    async def collect(encoding):
        return [ev async for ev in streamer.stream(blocks(encoding), api_model, sample_rate=sr,
                                                   encoding=encoding or "pcm_s16le")]

    for encoding in (None, "f32le"):
        evs = asyncio.run(collect(encoding))
        assert isinstance(evs[0], Hello) and isinstance(evs[-1], End)
        _same_timeline(evs[1:-1], reference.events)
    with pytest.raises(UsageError, match="async for"):
        list(streamer.stream(blocks(None), api_model, sample_rate=sr))


def test_readme_python_example_runs(tmp_path):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "streamer" / "examples").mkdir(parents=True)
    (tmp_path / "streamer" / "examples" / "conversation.flac").symlink_to(EXAMPLE)
    (tmp_path / "example.py").write_text(code)
    env_path = str(ROOT)
    p = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "PYTHONPATH": env_path})
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("Timeline(") and "s analysed" in p.stdout
    assert (tmp_path / "conversation.vtt").read_text().startswith("WEBVTT")
