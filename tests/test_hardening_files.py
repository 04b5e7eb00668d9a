"""Issue 16, files and options: every bad file, option and output path gives one error line, the
documented exit status and no output file; odd but valid input (non-UTF-8 names, stdin) works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamer.cli import main
from tests.conftest import EXAMPLE, ROOT, emostream
from tests.hostile import bad_inputs, non_utf8_path, tone


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if not ln.startswith("emostream: warning:")]
    assert len(lines) == 1 and lines[0].startswith("emostream: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    """Ten seconds of the bundled example: real speech, quick to label."""
    y, sr = sf.read(EXAMPLE, dtype="float32", frames=10 * 16000)
    p = tmp_path_factory.mktemp("speech") / "speech.wav"
    sf.write(p, y, sr)
    return p


def test_bad_inputs_leave_no_output_behind(tmp_path, capsys):
    outdir = tmp_path / "out"
    outdir.mkdir()
    for name, path in bad_inputs(tmp_path).items():
        rc, out, err = _cli(capsys, "label", str(path), "-f", "jsonl", "-o", str(outdir / "t.jsonl"),
                            "--summary", str(outdir / "s.json"), "--plot", str(outdir / "p.png"))
        line = _one_error_line(err)
        assert rc == 2, (name, rc, err)
        assert str(path) in line, line
        assert os.listdir(outdir) == [], (name, os.listdir(outdir))


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "textgrid"])
def test_failure_mid_analysis_removes_the_partial_output(tmp_path, capsys, speech, monkeypatch, fmt):
    import streamer.labelling as labelling

    real = labelling.run

    def dying_run(source, pipe, on_events, **kw):
        def once(evs):
            on_events(evs)
            raise KeyboardInterrupt  # Ctrl-C after the first events were written
        return real(source, pipe, once, **kw)

    monkeypatch.setattr(labelling, "run", dying_run)
    target = tmp_path / f"t.{fmt}"
    rc, _, _ = _cli(capsys, "label", str(speech), "-f", fmt, "-o", str(target))
    assert rc == 130
    assert os.listdir(tmp_path) == []


def test_all_outputs_appear_together(tmp_path, capsys, speech):
    rc, _, err = _cli(capsys, "label", str(speech), "-f", "csv", "-o", str(tmp_path / "t.csv"),
                      "--summary", str(tmp_path / "s.json"), "--plot", str(tmp_path / "p.png"), "-q")
    assert rc == 0, err
    assert sorted(os.listdir(tmp_path)) == ["p.png", "s.json", "t.csv"]
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    json.loads((tmp_path / "s.json").read_text())


@pytest.mark.parametrize("target,needle", [
    ("{d}", "is a directory"),
    ("{d}/missing/t.json", "does not exist"),
    ("/proc/t.json", "kernel filesystem"),
    ("/sys/t.json", "kernel filesystem"),
    ("/dev/full", "no space left"),
])
@pytest.mark.parametrize("option", ["-o", "--summary", "--plot"])
def test_bad_output_paths(tmp_path, capsys, speech, target, needle, option):
    target = target.format(d=tmp_path / "dir")
    (tmp_path / "dir").mkdir()
    out = tmp_path / "dir" / "ok.json"
    argv = ["label", str(speech), "-q", option, target] + ([] if option == "-o" else ["-o", str(out)])
    if option == "--plot" and target == "/dev/full":
        argv[argv.index("--plot") + 1] = "/dev/full"
    rc, _, err = _cli(capsys, *argv)
    line = _one_error_line(err)
    assert needle in line and option in line
    assert rc == 64
    assert os.listdir(tmp_path / "dir") == []  # -o was not written either


def test_read_only_output(tmp_path, capsys, speech):
    ro = tmp_path / "ro.json"
    ro.write_text("keep")
    ro.chmod(0o444)
    rc, _, err = _cli(capsys, "label", str(speech), "-o", str(ro))
    assert rc == 64 and "read-only" in _one_error_line(err) and ro.read_text() == "keep"


@pytest.mark.parametrize("opt,value", [("--window", "inf"), ("--hop", "inf"), ("--window", "1e9"),
                                       ("--hop", "1e-9"), ("--window", "nan"), ("--hop", "-1"),
                                       ("--window", "0.01"), ("--hop", "x" * 5000)])
def test_window_and_hop_bounds(capsys, speech, opt, value):
    rc, out, err = _cli(capsys, "label", str(speech), opt, value)
    line = _one_error_line(err)
    assert rc == 64 and opt in line and out == ""
    assert len(line) < 200  # a long value is quoted short


@pytest.mark.parametrize("argv,needle", [
    (["--alert", "nosuchlabel>5"], "unknown label 'nosuchlabel'"),
    (["--alert", "boss:angry>5", "--channels", "split", "--channel-names", "agent,customer"], "no channel 'boss'"),
    (["--alert", "3:angry>5", "--channels", "split"], "no channel 3"),
    (["--alert", "customer:angry>5"], "no channel 'customer'"),
])
def test_alert_rules_that_can_never_fire(tmp_path, capsys, argv, needle):
    stereo = tmp_path / "st.wav"
    sf.write(stereo, np.stack([tone(4), tone(4)], axis=1), 16000)
    out = tmp_path / "o.json"
    rc, _, err = _cli(capsys, "label", str(stereo), "-o", str(out), *argv)
    assert rc == 64 and needle in _one_error_line(err)
    assert not out.exists()


def test_alerts_file_with_an_unknown_label(tmp_path, capsys, speech):
    rules = tmp_path / "r.json"
    rules.write_text(json.dumps([{"labels": ["grumpy"], "seconds": 5}]))
    rc, _, err = _cli(capsys, "label", str(speech), "--alerts", str(rules))
    assert rc == 64 and "unknown label 'grumpy'" in _one_error_line(err)


def test_unsupported_rate_exits_2_with_the_path(tmp_path, capsys):
    from tests.hostile import wav_bytes

    p = tmp_path / "one-hertz.wav"
    p.write_bytes(wav_bytes(rate=1, data=b"\0" * 200))
    for cmd in ("label", "classify"):
        rc, _, err = _cli(capsys, cmd, str(p))
        assert rc == 2 and str(p) in _one_error_line(err)


def test_nan_samples_warn_and_label_as_silence(tmp_path, capsys):
    y = tone(4)
    y[:] = np.nan
    p = tmp_path / "nan.wav"
    sf.write(p, y, 16000, subtype="FLOAT")
    rc, out, err = _cli(capsys, "label", str(p), "-f", "jsonl")
    assert rc == 0 and "NaN or infinite samples" in err and "RuntimeWarning" not in err
    windows = [json.loads(ln) for ln in out.splitlines() if '"window"' in ln]
    assert windows and not any(w["speech"] for w in windows)


def test_huge_samples_no_numpy_warnings(tmp_path):
    y = tone(4) * 1e30
    y[::5] = np.inf
    p = tmp_path / "loud.wav"
    sf.write(p, y, 16000, subtype="FLOAT")
    r = emostream("label", str(p), "-f", "jsonl", "-o", str(tmp_path / "o.jsonl"))
    assert r.returncode == 0, r.stderr
    err = r.stderr.decode()
    assert "RuntimeWarning" not in err and "beyond full scale" in err and "NaN or infinite" in err


@pytest.mark.slow  # eight interpreter start-ups
def test_non_utf8_names_end_to_end(tmp_path, speech):
    bad = non_utf8_path(tmp_path)
    raw = os.fsencode(bad)
    good = str(speech)
    # classify: the odd name neither aborts the run nor hides the files after it
    r = subprocess.run([sys.executable, "-m", "streamer", "classify", "--json", raw, good, raw],
                       capture_output=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(ln) for ln in r.stdout.decode("utf-8").splitlines()]
    assert [row["path"] for row in rows] == [display for display in
                                             (bad.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                                              good, bad.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))]
    r = subprocess.run([sys.executable, "-m", "streamer", "classify", raw], capture_output=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0 and b"\xef\xbf\xbd" in r.stdout  # U+FFFD in the TSV line
    # label into a non-UTF-8 output name, every format that writes the source name
    for fmt in ("json", "jsonl", "vtt"):
        out = os.fsencode(str(tmp_path)) + b"/out-\xff." + fmt.encode()
        r = subprocess.run([sys.executable, "-m", "streamer", "label", raw, "-f", fmt, "-o", out,
                            "--summary", out + b".summary.json"], capture_output=True, timeout=120, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        text = open(out, encoding="utf-8").read()
        assert "\ufffd" in text
        if fmt != "vtt":
            json.loads(text if fmt == "json" else text.splitlines()[0])
    # a missing non-UTF-8 name is one clean error line
    r = subprocess.run([sys.executable, "-m", "streamer", "label", raw + b".missing"], capture_output=True,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.count(b"\n") == 1 and b"Traceback" not in r.stderr


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3"])
@pytest.mark.slow
def test_stdin(tmp_path, speech, fmt):
    from tests.conftest import ffmpeg

    src = tmp_path / f"in.{fmt}"
    ffmpeg("-i", str(speech), str(src))
    data = src.read_bytes()
    r = emostream("label", "-", "-f", "jsonl", input=data)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(ln) for ln in r.stdout.decode().splitlines()]
    assert lines[0]["source"] == "-" and lines[-1]["type"] == "end" and lines[-1]["duration"] > 9
    r = emostream("classify", "-", input=data)
    assert r.returncode == 0 and r.stdout.decode().startswith("-\t"), r.stderr


@pytest.mark.slow
def test_stdin_wav_through_a_pipe_without_a_length(tmp_path, speech):
    """ffmpeg writing WAV to a pipe cannot seek back to fill in the lengths: the spool still reads it."""
    from streamer.sources import ffmpeg_exe

    ff = subprocess.Popen([ffmpeg_exe(), "-v", "error", "-i", str(speech), "-f", "wav", "-"],
                          stdout=subprocess.PIPE)
    try:
        r = subprocess.run([sys.executable, "-m", "streamer", "label", "-", "-f", "jsonl"], stdin=ff.stdout,
                           capture_output=True, timeout=120, cwd=ROOT)
    finally:
        ff.stdout.close()
        ff.wait(timeout=30)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.decode().splitlines()[-1])["duration"] > 9


def test_stdin_errors(tmp_path):
    r = emostream("label", "-", input=b"")
    assert r.returncode == 2 and b"standard input is empty" in r.stderr
    r = emostream("label", "-", "-o", str(tmp_path / "o.json"), input=b"garbage" * 100)
    assert r.returncode == 2 and r.stderr.count(b"\n") == 1
    assert os.listdir(tmp_path) == []
    assert not [n for n in os.listdir(os.environ.get("TMPDIR", "/tmp")) if n.startswith("emostream-stdin-")]
