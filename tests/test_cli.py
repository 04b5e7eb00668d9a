"""The command line as a user runs it: contracts on success, one clear line on every bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import EXAMPLE, cli, emostream, ffmpeg, read_mono


def _fails_cleanly(proc, code=None, match=None):
    err = proc.stderr.decode()
    assert proc.returncode != 0, err
    if code is not None:
        assert proc.returncode == code, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("emostream: error:"), err
    if match:
        assert match in lines[0], err


def test_classify_tsv_and_json(clips):
    p = emostream("classify", str(clips["angry"]), str(clips["sad"]))
    assert p.returncode == 0, p.stderr.decode()
    rows = [ln.split("\t") for ln in p.stdout.decode().splitlines()]
    assert [r[0] for r in rows] == [str(clips["angry"]), str(clips["sad"])]
    from streamer.config import DEFAULT_LABELS

    for path, label, conf in rows:
        assert label in DEFAULT_LABELS and 0 < float(conf) <= 1
    p = emostream("classify", "--json", str(clips["angry"]))
    obj = json.loads(p.stdout)
    assert set(obj) == {"path", "label", "confidence", "probs"}
    assert abs(sum(obj["probs"].values()) - 1) < 1e-2 and obj["label"] == max(obj["probs"], key=obj["probs"].get)


def test_label_json_contract():
    p = emostream("label", str(EXAMPLE), "-f", "json")
    assert p.returncode == 0, p.stderr.decode()
    obj = json.loads(p.stdout)
    assert {"source", "duration", "sample_rate", "model", "windows", "segments"} <= set(obj)
    assert obj["sample_rate"] == 16000 and 60 < obj["duration"] < 65
    assert {"name", "version", "labels"} <= set(obj["model"])
    w = obj["windows"]
    assert len(w) >= 50
    for win in w:
        assert {"start", "end", "channel", "speech", "label", "confidence", "probs"} <= set(win)
        assert (win["label"] is None) == (not win["speech"])
    assert any(not x["speech"] for x in w) and sum(x["speech"] for x in w) > len(w) / 2  # pauses show as silence
    starts = [x["start"] for x in w]
    assert starts == sorted(starts)
    for s in obj["segments"]:
        assert {"start", "end", "channel", "label", "confidence"} <= set(s) and s["end"] > s["start"]


def test_label_window_and_hop_options():
    p = emostream("label", str(EXAMPLE), "-f", "jsonl", "--window", "2", "--hop", "0.5")
    assert p.returncode == 0, p.stderr.decode()
    wins = [json.loads(ln) for ln in p.stdout.decode().splitlines() if '"window"' in ln]
    assert len(wins) > 100
    assert abs(wins[1]["start"] - wins[0]["start"] - 0.5) < 1e-6 and abs(wins[0]["end"] - wins[0]["start"] - 2) < 1e-6


def test_split_channels_with_names(tmp_path, clips):
    a, sr = read_mono(clips["angry"])
    b, _ = read_mono(clips["neutral"])
    n = max(len(a), len(b)) + sr
    st = np.zeros((n * 2, 2), np.float32)
    st[: len(a), 0] = a  # agent speaks first, customer answers
    st[n : n + len(b), 1] = b
    p = tmp_path / "call.wav"
    sf.write(p, st, sr)
    r = emostream("label", str(p), "-f", "json", "--channels", "split", "--channel-names", "agent,customer")
    assert r.returncode == 0, r.stderr.decode()
    obj = json.loads(r.stdout)
    names = {w["channel_name"] for w in obj["windows"]}
    assert names == {"agent", "customer"}
    for ch, name, (lo, hi) in [(0, "agent", (0, len(a) / sr)), (1, "customer", (n / sr, (n + len(b)) / sr))]:
        speech = [w for w in obj["windows"] if w["channel"] == ch and w["speech"]]
        assert speech, name
        # each channel's speech windows overlap that channel's clip and nothing else
        assert all(w["end"] > lo and w["start"] < hi for w in speech), name
    r = emostream("classify", "--json", "--channels", "split", "--channel-names", "agent,customer", str(p))
    rows = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert [x["channel_name"] for x in rows] == ["agent", "customer"]


def test_mulaw_8k_telephone_input(tmp_path, clips):
    import soxr

    y, sr = read_mono(clips["angry"])
    p = tmp_path / "tel.wav"
    sf.write(p, soxr.resample(y, sr, 8000), 8000, subtype="ULAW")
    r = emostream("label", str(p), "-f", "json")
    assert r.returncode == 0, r.stderr.decode()
    obj = json.loads(r.stdout)
    ref = json.loads(emostream("label", str(clips["angry"]), "-f", "json").stdout)
    assert obj["sample_rate"] == 8000 and abs(obj["duration"] - ref["duration"]) < 0.05
    assert len(obj["windows"]) == len(ref["windows"])
    assert any(w["speech"] for w in obj["windows"])


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "vtt", "srt", "audacity", "textgrid"])
def test_every_format_writes_a_file(tmp_path, fmt):
    out = tmp_path / f"out.{fmt}"
    r = cli("label", str(EXAMPLE), "-f", fmt, "-o", str(out))  # in-process: the formats, not start-up
    assert r.returncode == 0, r.stderr.decode()
    assert out.stat().st_size > 100 and r.stdout == b""


def test_info():
    r = emostream("info", "--json")
    assert r.returncode == 0, r.stderr.decode()
    info = json.loads(r.stdout)
    assert len(info["labels"]) == 8 and info["runtime"] in ("ai_edge_litert", "tflite_runtime", "tensorflow.lite")
    assert info["features"]["sample_rate"] == 16000
    # the text form names the shipped model's speaker-independent figures, as its metadata records them
    text = emostream("info").stdout.decode()
    acc = info["evaluation"]["clean_16k"]["accuracy"]
    assert f"eval       clean_16k: accuracy {acc}, macro-F1 " in text
    # the normaliser's prior weights, per band when they differ (the metadata's own list)
    prior = info["normalisation_prior_frames"]
    norm = next(line for line in text.splitlines() if line.startswith("normalise"))
    if isinstance(prior, list):
        assert len(prior) == info["features"]["n_mfcc"] + (2 if info["features"]["pitch"] else 0)
        for w in set(prior):
            assert f"{w:g} frames on " in norm
    else:
        assert f"prior {prior:g} frames" in norm
    from tests.conftest import ROOT

    meta = json.loads((ROOT / "model" / "emotion.json").read_text())
    assert ("telephone-band prior" in norm) == (meta["normalisation"].get("narrowband_mean") is not None)
    assert ("with nothing above 4 kHz" in norm) == (meta["normalisation"].get("narrowband_mean") is not None)


# ---- bad input: one line, non-zero, no traceback ------------------------------------------------
# (in this process, cli(): the same main() without an interpreter start-up per case; the real
# process's exit status and stderr are checked by test_missing_file_from_a_real_process)


def test_missing_file_from_a_real_process():
    _fails_cleanly(emostream("label", "/no/such/file.wav"), 2, "no such file")


def test_missing_file():
    _fails_cleanly(cli("label", "/no/such/file.wav"), 2, "no such file")


def test_directory(tmp_path):
    _fails_cleanly(cli("classify", str(tmp_path)), 2, "is a directory")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    _fails_cleanly(cli("label", str(p)), 2, "empty")


def test_text_named_wav(tmp_path):
    p = tmp_path / "notes.wav"
    p.write_text("this is not audio\n" * 20)
    _fails_cleanly(cli("label", str(p)), 2)


def test_unknown_format(tmp_path):
    p = tmp_path / "data.xyz"
    p.write_bytes(np.random.default_rng(0).bytes(5000))
    _fails_cleanly(cli("classify", str(p)), 2)


def test_file_with_no_audio_stream(tmp_path):
    p = tmp_path / "video.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=64x64:d=1:r=10", "-c:v", "mpeg4", str(p))
    _fails_cleanly(cli("label", str(p)), 2, "no audio stream")


def test_corrupt_file(tmp_path, clips):
    data = bytearray(clips["angry"].read_bytes())
    data[100:] = np.random.default_rng(3).bytes(len(data) - 100)
    p = tmp_path / "corrupt.flac"
    p.write_bytes(bytes(data))
    r = cli("label", str(p))
    assert "Traceback" not in r.stderr.decode()
    if r.returncode == 0:  # decoders may salvage a frame or two; then they must say so
        assert "warning" in r.stderr.decode()
    else:
        _fails_cleanly(r, 2)


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3"])
def test_truncated_file_labels_what_decodes_and_warns(tmp_path, ext):
    y, sr = read_mono(EXAMPLE)
    full = tmp_path / f"full.{ext}"
    if ext == "mp3":
        wav = tmp_path / "full.wav"
        sf.write(wav, y[: sr * 20], sr)
        ffmpeg("-i", str(wav), str(full))
    else:
        sf.write(full, y[: sr * 20], sr)
    data = full.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) // 2])
    r = cli("label", str(cut), "-f", "json")
    err = r.stderr.decode()
    assert r.returncode == 0 and "Traceback" not in err, err
    obj = json.loads(r.stdout)
    assert 5 < obj["duration"] < 15 and len(obj["windows"]) > 3
    if ext != "mp3":  # an MP3 has no length in its header to compare with
        assert "warning" in err and "cut off" in err or "stopped" in err, err


@pytest.mark.parametrize("argv", [
    ["label"], ["label", "x.wav", "-f", "xml"], ["label", "x.wav", "--window", "-1"],
    ["classify", "--bogus", "x.wav"], ["frobnicate"],
])
def test_bad_options(argv):
    _fails_cleanly(cli(*argv), 64)


def test_bad_channel_names(clips):
    _fails_cleanly(cli("label", str(clips["sad"]), "--channels", "split", "--channel-names", "a,b,c"), 64)


def test_missing_model(tmp_path, clips):
    _fails_cleanly(cli("classify", "--model", str(tmp_path / "none.tflite"), str(clips["sad"])), 3, "model not found")


def test_corrupt_model(tmp_path, clips):
    import shutil

    from streamer.config import default_model_path

    m = tmp_path / "bad.tflite"
    m.write_bytes(b"not a flatbuffer" * 100)
    shutil.copy(default_model_path().with_suffix(".json"), tmp_path / "bad.json")
    _fails_cleanly(cli("classify", "--model", str(m), str(clips["sad"])), 3)


def test_dependencies_are_what_the_runtime_imports():
    """pyproject's dependencies = the packages streamer/ imports; the rest only behind extras."""
    import ast
    import re
    import sys
    import tomllib

    from tests.conftest import ROOT

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def dist(req: str) -> str:
        return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower().replace("_", "-")

    core = {dist(r) for r in project["dependencies"]}
    extras = {dist(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    imported = set()
    for f in (ROOT / "streamer").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    imported = {m.lower().replace("_", "-") for m in imported if m not in sys.stdlib_module_names} - {"streamer"}
    # inference falls back to whichever TFLite runtime is there (tensorflow comes with `train`)
    fallbacks = {"tflite-runtime", "tensorflow"}
    assert core <= imported, f"required but never imported: {sorted(core - imported)}"
    optional = {"matplotlib": "plot", "redis": "cluster", "distributed": "cluster"}
    for name in sorted(imported - core - fallbacks):
        assert name in optional and name in extras, f"{name} is imported but neither required nor an extra"
    assert {"librosa", "matplotlib"}.isdisjoint(core) and "sounddevice" in core
    # every package of the tree is installed (a new subpackage must be listed, or `pip install .` lacks it)
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    tree = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "streamer").rglob("__init__.py")}
    assert tree <= listed, f"not in [tool.setuptools] packages: {sorted(tree - listed)}"


def test_readme_setup_commands_run_as_root_or_user_and_ci_runs_the_same_tests():
    import re
    import subprocess

    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = readme.split("## Set-up: two commands", 1)[1].split("\n## ", 1)[0]
    commands = [ln[4:] for ln in setup.splitlines() if ln.startswith("    ") and ln.strip()]
    first, second = commands[0], commands[1]
    assert "sudo" not in first
    for cmd in commands:
        assert subprocess.run(["sh", "-n", "-c", cmd]).returncode == 0, cmd  # POSIX sh syntax
    # sudo only for a user: as root the prefix is empty (a fresh container has no sudo)
    prefix = second.split(";", 1)[0]
    for uid, want in (("0", ""), ("1000", "sudo")):
        out = subprocess.run(["sh", "-c", f"id() {{ echo {uid}; }}; {prefix}; printf %s \"$S\""],
                             capture_output=True, text=True)
        assert out.stdout == want, (uid, out.stdout, out.stderr)
    assert "apt-get update" in second  # a fresh machine has no package lists
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = re.search(r"(\.venv/bin/python -m pytest[^\n&]*)$", second).group(1).strip()
    assert ci.rstrip().splitlines()[-1].strip() == test_cmd and "--all" in test_cmd
    assert re.search(r'pip install [^\n]*-e "(\.\[[^\]]+\])"', second).group(1) in ci


@pytest.mark.parametrize("command", ["classify", "label", "serve", "listen", "send", "demo", "devices", "info"])
def test_help_shows_defaults_and_examples(command, capsys):
    from streamer.cli import main

    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    examples = out.split("examples:\n", 1)[1].strip().splitlines()
    assert 1 <= len(examples) <= 3 and all(ln.strip().startswith("emostream " + command) for ln in examples)
    if command in ("label", "serve", "listen", "demo", "classify"):
        assert "(default: " in out
    if command in ("classify", "label", "send"):
        positional = out.split("positional arguments:", 1)[1].split("options:", 1)[0]
        assert "audio" in positional  # FILE says what it may be
    assert "EMOSTREAM_TOKEN" not in out or "(default: $EMOSTREAM_TOKEN" not in out


def test_usage_errors_name_the_command_once(capsys, monkeypatch):
    from streamer.cli import main

    monkeypatch.setenv("EMOSTREAM_TOKEN", "s3cret")
    assert main(["label", "x.wav", "-f", "nope"]) == 64
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("emostream: error: argument -f/--format: invalid choice")
    assert err[0].count("emostream") == 2 and err[0].endswith("(see: emostream label --help)")
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "s3cret" not in capsys.readouterr().out  # a token from the environment is never shown


def test_plot_without_matplotlib_is_one_clear_error_before_any_work(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = ("import sys; sys.modules['matplotlib'] = None  # as if the 'plot' extra were not installed\n"
            "from streamer.cli import main; sys.exit(main(sys.argv[1:]))")
    out = tmp_path / "t.json"
    p = subprocess.run([sys.executable, "-c", code, "label", str(EXAMPLE), "-o", str(out), "--plot",
                        str(tmp_path / "t.png")], capture_output=True, cwd=ROOT, timeout=120)
    _fails_cleanly(p, 64, "--plot needs matplotlib: pip install 'emostream[plot]'")
    assert list(tmp_path.iterdir()) == []


def test_send_prints_a_server_error_once(clips, capsys):
    """A server that refuses the stream: one line, the server's reason, exit 5 (not the line twice)."""
    import asyncio
    import threading

    from websockets.asyncio.server import serve

    from streamer.cli import main
    from tests.conftest import free_port

    port = free_port()
    ready, done = threading.Event(), threading.Event()

    async def refuse(ws):
        await ws.recv()  # the start message
        await ws.send(json.dumps({"type": "error", "message": "warning: audio lost"}))
        await ws.send(json.dumps({"type": "error", "message": "stream id call-1 is in use"}))
        await ws.close()

    async def server():
        async with serve(refuse, "127.0.0.1", port, close_timeout=1):
            ready.set()
            while not done.is_set():
                await asyncio.sleep(0.05)

    t = threading.Thread(target=lambda: asyncio.run(server()), daemon=True)
    t.start()
    try:
        assert ready.wait(30)
        code = main(["send", str(clips["sad"]), f"ws://127.0.0.1:{port}/ingest?stream=call-1", "-q"])
    finally:
        done.set()
        t.join(10)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 5
    assert err == ["emostream: server: warning: audio lost", "emostream: error: server: stream id call-1 is in use"]


def test_a_command_loads_only_its_own_module():
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = ("import sys\nfrom streamer.cli import build_parser, _command_in\n"
            "build_parser(_command_in(sys.argv[1:]))\n"
            "print(sorted(m for m in sys.modules if m.startswith('streamer.cli.') or m in ('numpy', 'asyncio')))")
    for argv, want in (([], []), (["--help"], []), (["info", "--json"], ["streamer.cli.args", "streamer.cli.info"])):
        out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == repr(want), (argv, out.stdout)


def test_info_shows_no_paths_of_the_training_machine(tmp_path, capsys):
    import shutil

    from streamer.cli import main
    from tests.conftest import ROOT

    model = tmp_path / "model"
    shutil.copytree(ROOT / "model", model, ignore=shutil.ignore_patterns("reports", "*.md"))
    meta = json.loads((model / "emotion.json").read_text())
    meta.setdefault("evaluation", {}).update(
        command="python tools/train.py --data /home/trainer/corpora/ravdess",
        data="/home/trainer/corpora/ravdess (24 actors)", notes="cache in ~/emo-cache/features.npz")
    (model / "emotion.json").write_text(json.dumps(meta))
    for argv in (["info", "--model", str(model / "emotion.tflite")], ["info", "--json", "--model", str(model / "emotion.tflite")]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "/home/trainer" not in out and "~/emo-cache" not in out and "--data" not in out, out
        assert "ravdess (24 actors)" in out and "features.npz" in out  # the facts stay, the paths go
        # each figure names the command that measures it again, without the run's paths
        assert "python tools/train.py" in out, out


def test_info_names_the_command_behind_each_figure(tmp_path, capsys):
    """A merged CV's figures name its first run's command, without folds, paths, tags or threads; a
    protocol's continuous figures share its command; the calibration is printed with its ECE."""
    import shutil

    from streamer.cli import main
    from streamer.cli.info import reproduce
    from tests.conftest import ROOT

    run = "python -m tools.train --model default --threads 1 --no-curve --reports runs/x --tag a --cv --folds 1,2 --seeds-cv 5 --save-probs /tmp/a.npz"
    merged = f"python -m tools.cv_merge <{run}> <{run.replace('1,2', '3')}>"
    assert reproduce(merged) == "python -m tools.train --model default --cv --seeds-cv 5"
    assert reproduce("python -m tools.train --data=/srv/c --cross emodb:ravdess") == "python -m tools.train --cross emodb:ravdess"
    assert reproduce(None) is None and reproduce('python -m tools.train --tag "x') is None
    model = tmp_path / "model"
    shutil.copytree(ROOT / "model", model, ignore=shutil.ignore_patterns("reports", "*.md"))
    meta = json.loads((model / "emotion.json").read_text())
    cross = "python -m tools.train --model default --reports /home/t/r --cross ravdess:emodb"
    meta["evaluation"] = {"protocol": "5-fold", "command": merged, "clean_16k": {"accuracy": 0.61},
                          "continuous_16k": {"accuracy": 0.62},
                          "calibration": {"temperature": 0.8, "ece": 0.07, "ece_after": 0.04},
                          "cross_ravdess_emodb_16k": {"accuracy": 0.31, "command": cross},
                          "cross_ravdess_emodb_continuous_16k": {"accuracy": 0.32}}
    (model / "emotion.json").write_text(json.dumps(meta))
    assert main(["info", "--model", str(model / "emotion.tflite")]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("eval")]
    assert lines[1:] == [
        "eval       measured by: python -m tools.train --model default --cv --seeds-cv 5",
        "eval       clean_16k: accuracy 0.61",
        "eval       continuous_16k: accuracy 0.62",
        "eval       calibration: temperature 0.8, expected calibration error 0.07 before, 0.04 after",
        "eval       measured by: python -m tools.train --model default --cross ravdess:emodb",
        "eval       cross_ravdess_emodb_16k: accuracy 0.31",
        "eval       cross_ravdess_emodb_continuous_16k: accuracy 0.32"], lines
    assert main(["info", "--json", "--model", str(model / "emotion.tflite")]) == 0
    ev = json.loads(capsys.readouterr().out)["evaluation"]
    assert ev["cross_ravdess_emodb_continuous_16k"]["reproduce"] == "python -m tools.train --model default --cross ravdess:emodb"
    assert "command" not in ev and "/home/t" not in json.dumps(ev)
