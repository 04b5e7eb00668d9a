"""Archives: `emostream label INPUT... --out-dir DIR` on a local process pool and on a real Dask cluster.

Every run here is a real subprocess (the command line as a user types it), every output is compared
byte for byte with `emostream label FILE -o OUT` on the same file. The single-file references run
with one BLAS thread, as pool and Dask workers do: the float32 feature arithmetic depends on the
BLAS thread count in the fourth decimal of a probability.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import EXAMPLE, FIXTURES, ROOT

pytestmark = pytest.mark.slow  # process pools, Dask clusters and subprocess runs: run with --all

ONE_THREAD = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}
KEYS = {"path", "output", "status", "audio_s", "seconds", "error", "run"}


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ONE_THREAD)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def cli(*args: str, timeout: float = 300, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    """`python -m streamer ARGS` in a subprocess, text output."""
    return subprocess.run([sys.executable, "-m", "streamer", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=kw.pop("cwd", ROOT), env=env or _env(), **kw)


def reference(pairs: list[tuple[str, Path]], fmt: str = "json", cwd: Path = ROOT) -> None:
    """`emostream label SRC -f FMT -o OUT` for each pair, in one process with one BLAS thread."""
    code = ("import sys\nfrom streamer.cli import main\n"
            "args = sys.argv[1:]\n"
            "for src, out in zip(args[1::2], args[2::2]):\n"
            "    rc = main(['label', src, '-f', args[0], '-o', out, '-q'])\n"
            "    assert rc == 0, (src, rc)\n")
    flat = [fmt] + [x for src, out in pairs for x in (src, str(out))]
    subprocess.run([sys.executable, "-c", code, *flat], check=True, timeout=600, cwd=cwd, env=_env())


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def parts(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if ".part" in p.name]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def archive(tmp_path: Path) -> Path:
    """calls/ with the four fixture clips at the top and the example conversation in a subfolder."""
    root = tmp_path / "calls"
    (root / "2024" / "05").mkdir(parents=True)
    for p in sorted(FIXTURES.glob("*.flac")):
        shutil.copy(p, root / p.name)
    shutil.copy(EXAMPLE, root / "2024" / "05" / "conversation.flac")
    (root / "notes.txt").write_text("not audio: a directory walk skips it\n")
    (root / ".hidden.wav").write_bytes(b"skipped: hidden")
    return root


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-minute recording (the example conversation four times), for runs that last a while."""
    y, sr = sf.read(EXAMPLE, dtype="float32")
    path = tmp_path_factory.mktemp("long") / "long.flac"
    sf.write(path, np.concatenate([y] * 4), sr)
    return path


def _copies(src: Path, directory: Path, n: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = directory / f"call{i:02d}{src.suffix}"
        shutil.copy(src, p)
        out.append(p)
    return out


# ----------------------------------------------------------------------------------------- inputs

def test_collect_inputs_mirrors_each_input_root(tmp_path: Path, archive: Path) -> None:
    from streamer.archive import collect_inputs

    extra = tmp_path / "elsewhere" / "one.flac"
    extra.parent.mkdir()
    shutil.copy(EXAMPLE, extra)
    listed = tmp_path / "lists" / "more"
    listed.mkdir(parents=True)
    shutil.copy(EXAMPLE, listed / "x.flac")
    (tmp_path / "lists" / "todo.txt").write_text(f"# a comment\n\nmore/x.flac\n{extra}\n")
    os.symlink(archive, archive / "2024" / "loop")  # a link back up the tree: walked once, no loop
    jobs = collect_inputs([str(archive), str(extra), f"@{tmp_path / 'lists' / 'todo.txt'}"],
                          str(tmp_path / "out"), "vtt")
    rels = [j.rel for j in jobs]
    assert rels == ["03-01-01-01-01-01-06.flac", "03-01-03-02-02-01-05.flac", "03-01-04-02-01-01-02.flac",
                    "03-01-05-02-01-01-01.flac", "2024/05/conversation.flac",  # the directory, walked
                    "one.flac",  # a file: its own directory is the root (given again in the list: once)
                    "more/x.flac"]  # a list: its directory is the root
    assert jobs[4].output == str(tmp_path / "out" / "2024" / "05" / "conversation.flac.vtt")
    assert jobs[4].source == str(archive / "2024" / "05" / "conversation.flac")


def test_collect_inputs_refuses_two_inputs_with_one_output(tmp_path: Path) -> None:
    from streamer.archive import collect_inputs
    from streamer.errors import UsageError

    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        shutil.copy(EXAMPLE, tmp_path / d / "call.flac")
    with pytest.raises(UsageError, match="would both be written to"):
        collect_inputs([str(tmp_path / "a" / "call.flac"), str(tmp_path / "b" / "call.flac")], str(tmp_path / "o"), "json")


def test_no_audio_and_unreadable_list_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    r = cli("label", str(tmp_path / "empty"), "--out-dir", str(tmp_path / "out"))
    assert r.returncode == 2 and r.stderr.startswith("emostream: error: no audio files") and r.stderr.count("\n") == 1
    r = cli("label", f"@{tmp_path / 'missing.txt'}", "--out-dir", str(tmp_path / "out"))
    assert r.returncode == 2 and "cannot read the input list" in r.stderr and "Traceback" not in r.stderr


def test_a_model_that_cannot_work_fails_the_run_at_start(tmp_path: Path) -> None:
    from streamer.config import default_model_path

    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer" * 64)
    shutil.copy(default_model_path().with_suffix(".json"), bad.with_suffix(".json"))
    r = cli("label", str(FIXTURES), "--out-dir", str(tmp_path / "out"), "--model", str(bad))
    assert r.returncode == 3 and r.stderr.startswith("emostream: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "out").exists()  # nothing started, no manifest of failures


def test_usage_errors(tmp_path: Path) -> None:
    a = str(FIXTURES / "03-01-01-01-01-01-06.flac")
    cases = [(["label", a, a], "several inputs need --out-dir"),
             (["label", a, "--workers", "2"], "--workers and --dask need --out-dir"),
             (["label", a, "--out-dir", str(tmp_path), "--summary", "s.json"], "--summary is for one recording"),
             (["label", a, "--out-dir", str(tmp_path), "--workers", "0"], "--workers must be at least 1"),
             (["label", a, "--out-dir", str(tmp_path), "--workers", "2", "--dask", "local"], "not allowed with"),
             (["label", a, "--out-dir", str(tmp_path), "--dask", "local:x"], "local:N needs a positive number"),
             (["label", a, "-", "--out-dir", str(tmp_path)], "cannot go with --out-dir")]
    for args, text in cases:
        r = cli(*args)
        assert r.returncode == 64, (args, r.stderr)
        assert text in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)


# ----------------------------------------------------------------------------------------- local pool

def test_local_pool_outputs_equal_single_file_label(tmp_path: Path, archive: Path) -> None:
    out = tmp_path / "out"
    r = cli("label", str(archive), "--out-dir", str(out), "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert "5 inputs: 5 done, 0 skipped, 0 failed" in r.stderr
    sources = sorted(p for p in archive.rglob("*.flac") if not p.name.startswith("."))
    refs = [(str(p), tmp_path / f"ref{i}.json") for i, p in enumerate(sources)]
    reference(refs)
    for src, ref in refs:
        got = out / (os.path.relpath(src, archive) + ".json")
        assert got.read_bytes() == ref.read_bytes(), got
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(
        [os.path.relpath(s, archive) + ".json" for s, _ in refs] + ["manifest.jsonl"])
    lines = manifest(out)
    assert len(lines) == 5 and all(set(x) == KEYS and x["status"] == "done" and x["error"] is None for x in lines)
    by_path = {x["path"]: x for x in lines}
    conv = by_path["2024/05/conversation.flac"]
    assert conv["output"] == "2024/05/conversation.flac.json"
    assert conv["audio_s"] == pytest.approx(json.loads((out / conv["output"]).read_text())["duration"])
    assert all(x["seconds"] > 0 for x in lines)


def test_other_formats_and_one_worker(tmp_path: Path, archive: Path) -> None:
    out = tmp_path / "out"
    r = cli("label", str(archive / "2024"), str(archive / "03-01-01-01-01-01-06.flac"), "-f", "vtt",
            "--out-dir", str(out), "--workers", "1", "--channels", "split", "--alert", "angry>1")
    assert r.returncode == 0, r.stderr
    refs = [(str(archive / "2024" / "05" / "conversation.flac"), tmp_path / "c.vtt"),
            (str(archive / "03-01-01-01-01-01-06.flac"), tmp_path / "f.vtt")]
    code = ("import sys\nfrom streamer.cli import main\n"
            "for src, o in zip(sys.argv[1::2], sys.argv[2::2]):\n"
            "    assert main(['label', src, '-f', 'vtt', '-o', o, '--channels', 'split', '--alert', 'angry>1']) == 0\n")
    subprocess.run([sys.executable, "-c", code, *[str(x) for pair in refs for x in pair]], check=True,
                   cwd=ROOT, env=_env(), timeout=300)
    assert (out / "05" / "conversation.flac.vtt").read_bytes() == refs[0][1].read_bytes()
    assert (out / "03-01-01-01-01-01-06.flac.vtt").read_bytes() == refs[1][1].read_bytes()


def test_failed_inputs_never_stop_the_others(tmp_path: Path, archive: Path) -> None:
    (archive / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 10)
    (archive / "empty.flac").write_bytes(b"")
    todo = tmp_path / "todo.txt"
    todo.write_text("calls/03-01-01-01-01-01-06.flac\ncalls/gone.wav\n")
    out = tmp_path / "out"
    r = cli("label", str(archive), f"@{todo}", "--out-dir", str(out))
    assert r.returncode == 2
    assert "emostream: error: 3 of 8 inputs failed" in r.stderr and "Traceback" not in r.stderr
    lines = {x["path"]: x for x in manifest(out)}
    assert len(lines) == 8  # the clip given twice (walked and listed, same root) is labelled once
    failed = {p for p, x in lines.items() if x["status"] == "failed"}
    assert failed == {"corrupt.wav", "empty.flac", "calls/gone.wav"}
    assert "file is empty" in lines["empty.flac"]["error"]
    assert lines["calls/gone.wav"]["error"].startswith(str(tmp_path / "calls" / "gone.wav"))
    assert all(lines[p]["audio_s"] is None and not (out / lines[p]["output"]).exists() for p in failed)
    assert all(x["status"] == "done" and (out / x["output"]).is_file() for p, x in lines.items() if p not in failed)
    assert not parts(out)


def test_rerun_skips_complete_outputs_and_redoes_the_rest(tmp_path: Path, archive: Path) -> None:
    out = tmp_path / "out"
    assert cli("label", str(archive), "--out-dir", str(out), "-f", "csv").returncode == 0
    first = {x["path"]: x for x in manifest(out)}
    gone = out / "2024" / "05" / "conversation.flac.csv"
    kept = out / "03-01-01-01-01-01-06.flac.csv"
    before = gone.read_bytes()
    stamp = kept.stat().st_mtime_ns
    gone.unlink()
    (out / "2024" / "05" / ".conversation.flac.abcd1234.part.csv").write_text("a killed run's half\n")
    r = cli("label", str(archive), "--out-dir", str(out), "-f", "csv")
    assert r.returncode == 0, r.stderr
    assert "5 inputs: 1 done, 4 skipped, 0 failed" in r.stderr
    lines = manifest(out)
    assert len(lines) == 10 and len({x["run"] for x in lines}) == 2
    second = {x["path"]: x for x in lines[5:]}
    assert second["2024/05/conversation.flac"]["status"] == "done"
    assert {p for p, x in second.items() if x["status"] == "skipped"} == set(first) - {"2024/05/conversation.flac"}
    for p, x in second.items():
        if x["status"] == "skipped":  # the duration of the run that made the output; no time spent
            assert x["audio_s"] == first[p]["audio_s"] and x["seconds"] == 0
    assert gone.read_bytes() == before and kept.stat().st_mtime_ns == stamp
    assert not parts(out)  # the stale temporary file is gone


def test_dask_without_the_extra_names_it(tmp_path: Path) -> None:
    blocked = tmp_path / "site" / "distributed"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('distributed is not installed')\n")
    env = _env(PYTHONPATH=f"{tmp_path / 'site'}{os.pathsep}{ROOT}")
    r = cli("label", str(FIXTURES), "--out-dir", str(tmp_path / "out"), "--dask", "tcp://127.0.0.1:1", env=env)
    assert r.returncode == 64
    assert r.stderr == "emostream: error: --dask needs the 'cluster' extra: pip install 'emostream[cluster]'\n"


@pytest.mark.slow
def test_unreachable_scheduler_is_exit_4(tmp_path: Path) -> None:
    port = free_port()
    t0 = time.monotonic()
    r = cli("label", str(FIXTURES), "--out-dir", str(tmp_path / "out"), "--dask", f"tcp://127.0.0.1:{port}")
    assert r.returncode == 4, r.stderr
    assert r.stderr.startswith(f"emostream: error: cannot reach the Dask scheduler at tcp://127.0.0.1:{port}")
    assert r.stderr.count("\n") == 1
    assert time.monotonic() - t0 < 90
    assert not (tmp_path / "out").exists()  # nothing started


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


def _terminal_signals() -> None:
    # a job started from a terminal takes Ctrl-C; pytest run in the background of a script (`cmd &`)
    # inherits SIGINT ignored, which Python keeps, and the run would rightly not stop
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_run(inputs: Path, out: Path) -> subprocess.Popen:
    """`label INPUTS -f csv --out-dir OUT --workers 2` in its own session (a job to kill as a whole)."""
    return subprocess.Popen([sys.executable, "-m", "streamer", "label", str(inputs), "-f", "csv", "--out-dir",
                             str(out), "--workers", "2"], cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_terminal_signals)


def start_run_on_copies(tmp_path: Path, clip: Path, n: int = 8) -> tuple[list[Path], Path, subprocess.Popen]:
    """``n`` copies of ``clip`` in tmp_path/in, and :func:`start_run` of them into tmp_path/out."""
    inputs = _copies(clip, tmp_path / "in", n)
    out = tmp_path / "out"
    return inputs, out, start_run(tmp_path / "in", out)


def _wait_lines(out: Path, n: int, proc: subprocess.Popen, limit: float = 240) -> None:
    t_end = time.monotonic() + limit
    while time.monotonic() < t_end:
        if (out / "manifest.jsonl").exists() and len((out / "manifest.jsonl").read_text().splitlines()) >= n:
            return
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    raise AssertionError(f"no {n} manifest lines in {limit} s")


@pytest.mark.slow
def test_kill_9_mid_run_leaves_nothing_finished_looking_and_a_rerun_completes(tmp_path: Path, long_clip: Path) -> None:
    inputs = _copies(long_clip, tmp_path / "in", 10)
    ref = tmp_path / "ref.csv"  # csv names no source: every copy's output equals this one
    reference([(str(long_clip), ref)], fmt="csv")
    out = tmp_path / "out"
    proc = start_run(tmp_path / "in", out)
    try:
        _wait_lines(out, 3, proc)
    finally:
        _kill_group(proc)  # the runner and its pool processes, as a terminal's kill of the job does
    finished = [p for p in out.glob("*.csv") if not p.name.startswith(".")]
    assert 3 <= len(finished) < len(inputs)
    for p in finished:
        assert p.read_bytes() == ref.read_bytes(), p  # under its final name means complete
    assert all(not p.name.startswith("call") for p in parts(out))  # halves only under temporary names
    r = cli("label", str(tmp_path / "in"), "-f", "csv", "--out-dir", str(out), "--workers", "2")
    assert r.returncode == 0, r.stderr
    last = manifest(out)[-len(inputs):]
    assert {x["status"] for x in last if x["path"] + ".csv" in {p.name for p in finished}} == {"skipped"}
    assert sum(x["status"] == "done" for x in last) == len(inputs) - len(finished)
    for p in inputs:
        assert (out / (p.name + ".csv")).read_bytes() == ref.read_bytes()
    assert not parts(out)


@pytest.mark.slow
def test_a_pool_process_killed_mid_file_is_retried(tmp_path: Path, long_clip: Path) -> None:
    psutil = pytest.importorskip("psutil")
    inputs = _copies(long_clip, tmp_path / "in", 8)
    ref = tmp_path / "ref.csv"
    reference([(str(long_clip), ref)], fmt="csv")
    out = tmp_path / "out"
    proc = start_run(tmp_path / "in", out)
    try:
        _wait_lines(out, 2, proc)
        # a labelling process (not the spawn machinery's resource tracker): one that imported the model
        workers = [c for c in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(c.cmdline())
                   and "resource_tracker" not in " ".join(c.cmdline())]
        assert workers, "no pool process found"
        workers[0].send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=600)
    finally:
        _kill_group(proc)
    assert proc.returncode == 0, err
    lines = manifest(out)
    assert len(lines) == len(inputs) and {x["status"] for x in lines} == {"done"}
    for p in inputs:
        assert (out / (p.name + ".csv")).read_bytes() == ref.read_bytes()
    assert not parts(out)


# ----------------------------------------------------------------------------------------- Dask

def _dask(*args: str, cwd: Path, log: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("dask")
    return subprocess.Popen([str(exe), *args], cwd=cwd, env=_env(), stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.slow
def test_dask_cluster_with_a_worker_killed_mid_file(tmp_path: Path, long_clip: Path, archive: Path) -> None:
    distributed = pytest.importorskip("distributed")
    _copies(long_clip, archive / "long", 8)
    local = tmp_path / "local"
    assert cli("label", str(archive), "--out-dir", str(local), "--workers", "2").returncode == 0
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    elsewhere = tmp_path / "cwd"  # workers run somewhere else: tasks must carry absolute paths
    elsewhere.mkdir()
    procs: list[subprocess.Popen] = []
    client = None
    try:
        procs.append(_dask("scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard",
                           cwd=elsewhere, log=tmp_path / "scheduler.log"))
        workers = {}
        for name in ("w1", "w2"):
            workers[name] = _dask("worker", address, "--nthreads", "1", "--no-nanny", "--name", name,
                                  "--host", "127.0.0.1", "--no-dashboard", cwd=elsewhere,
                                  log=tmp_path / f"{name}.log")
            procs.append(workers[name])
        client = distributed.Client(address, timeout=60)
        client.wait_for_workers(2, timeout=120)
        names = {info["name"]: addr for addr, info in client.scheduler_info()["workers"].items()}
        out = tmp_path / "out"
        run = subprocess.Popen([sys.executable, "-m", "streamer", "label", str(archive), "--out-dir", str(out),
                                "--dask", address], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
        procs.append(run)
        _wait_lines(out, 2, run)
        t_end = time.monotonic() + 120
        while not client.processing(workers=[names["w1"]]).get(names["w1"]):  # w1 is inside a task
            assert time.monotonic() < t_end and run.poll() is None, "w1 never got a task"
            time.sleep(0.02)
        os.kill(workers["w1"].pid, signal.SIGKILL)
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err
        assert "on the Dask cluster at" in err and "13 inputs: 13 done, 0 skipped, 0 failed" in err
        assert workers["w1"].wait(timeout=30) == -signal.SIGKILL
        assert list(client.scheduler_info()["workers"]) == [names["w2"]]
    finally:
        if client is not None:
            client.close()
        for p in reversed(procs):
            _kill_group(p)
    lines = manifest(out)
    assert sorted(x["path"] for x in lines) == sorted(x["path"] for x in manifest(local))  # once each
    assert {x["status"] for x in lines} == {"done"}
    for x in lines:
        assert (out / x["output"]).read_bytes() == (local / x["output"]).read_bytes(), x["output"]
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == sorted(p.relative_to(local) for p in local.rglob("*"))


@pytest.mark.slow
def test_dask_local_cluster(tmp_path: Path, archive: Path) -> None:
    pytest.importorskip("distributed")
    out = tmp_path / "out"
    r = cli("label", str(archive), "--out-dir", str(out), "--dask", "local:2", "-f", "jsonl")
    assert r.returncode == 0, r.stderr
    assert "on a local Dask cluster of 2 workers" in r.stderr
    refs = [(str(archive / "2024" / "05" / "conversation.flac"), tmp_path / "ref.jsonl")]
    reference(refs, fmt="jsonl")
    assert (out / "2024" / "05" / "conversation.flac.jsonl").read_bytes() == refs[0][1].read_bytes()
    assert {x["status"] for x in manifest(out)} == {"done"} and len(manifest(out)) == 5


def test_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "streamer", "label", str(FIXTURES), "--out-dir",
                                 str(tmp_path / "tty"), "--workers", "1"], cwd=ROOT, env=_env(),
                                stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # the terminal closed with the process
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=300) == 0
    finally:
        os.close(master)
    text = b"".join(chunks).decode().replace("\r\n", "\n")  # the terminal's own line ends
    bar = next(line for line in text.split("\n") if "files" in line).split("\r")[-1]  # as last drawn
    assert "4/4 files" in bar and "h audio" in bar and "h/h" in bar and "ETA 0:00:00" in bar
    assert "4 inputs: 4 done, 0 skipped, 0 failed" in text
    r = cli("label", str(FIXTURES), "--out-dir", str(tmp_path / "pipe"), "--workers", "1")
    assert r.returncode == 0 and "\r" not in r.stderr and "ETA" not in r.stderr  # not a terminal: no bar
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("emostream: 4 inputs: 4 done"), r.stderr  # one summary line


def test_workers_keep_freed_memory_under_dasks_malloc_setting(tmp_path: Path, long_clip: Path) -> None:
    # Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536: without the worker undoing it,
    # every large array is a fresh mmap, 100 000+ page faults a 4-minute file and twice the CPU.
    code = ("import resource, sys\n"
            "from streamer.archive import Job, LabelOptions, label_one\n"
            "def job(i): return Job(sys.argv[1], sys.argv[1], f'f{i}', f'{sys.argv[2]}/f{i}.json')\n"
            "assert label_one(job(0), LabelOptions(), sys.argv[2]).status == 'done'  # model, warm-up\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "assert label_one(job(1), LabelOptions(), sys.argv[2]).status == 'done'\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n")
    run = subprocess.run([sys.executable, "-c", code, str(long_clip), str(tmp_path)], capture_output=True,
                         text=True, cwd=ROOT, env=_env(MALLOC_TRIM_THRESHOLD_="65536"), timeout=300, check=True)
    assert int(run.stdout) < 5000, run.stdout


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_a_rerun_completes(tmp_path: Path, long_clip: Path) -> None:
    psutil = pytest.importorskip("psutil")
    inputs, out, proc = start_run_on_copies(tmp_path, long_clip)
    try:
        _wait_lines(out, 2, proc)
        family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends to the whole job
        _, err = proc.communicate(timeout=120)
    finally:
        _kill_group(proc)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not parts(out)  # interrupted writers removed their temporary files
    t_end = time.monotonic() + 30
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in family):
        assert time.monotonic() < t_end, "processes of the run outlived it"
        time.sleep(0.1)
    r = cli("label", str(tmp_path / "in"), "-f", "csv", "--out-dir", str(out), "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.glob("call*.csv")) == sorted(p.name + ".csv" for p in inputs)


@pytest.mark.slow
def test_ctrl_c_of_the_parent_alone_stops_its_workers_too(tmp_path: Path, long_clip: Path) -> None:
    """SIGINT to the runner only (kill -INT PID, not the terminal's whole job): it tells its workers to
    stop, waits for them a bounded time, and exits 130; nothing of the run is left running."""
    psutil = pytest.importorskip("psutil")
    _, out, proc = start_run_on_copies(tmp_path, long_clip)
    try:
        _wait_lines(out, 2, proc)
        family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        assert len(family) >= 3  # the runner and its two workers
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        _kill_group(proc)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and took < 30
    t_end = time.monotonic() + 30
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in family):
        assert time.monotonic() < t_end, "processes of the run outlived it"
        time.sleep(0.1)
    assert not parts(out)


@pytest.mark.slow
def test_ctrl_c_removes_the_temporary_files_of_workers_that_had_to_be_killed(tmp_path: Path,
                                                                             long_clip: Path) -> None:
    """Workers that cannot run their own clean-up (stopped here; in life, stuck in native code past the
    grace time) are killed, and the runner removes the temporary files of the files they were writing."""
    psutil = pytest.importorskip("psutil")
    _, out, proc = start_run_on_copies(tmp_path, long_clip)
    try:
        _wait_lines(out, 1, proc)
        workers = [c for c in psutil.Process(proc.pid).children(recursive=True)
                   if "spawn_main" in " ".join(c.cmdline())]  # not multiprocessing's resource tracker
        assert len(workers) == 2
        t_end = time.monotonic() + 120
        while True:  # stopped in the middle of writing: their temporary files are there
            for w in workers:
                w.suspend()
            if parts(out):
                break
            for w in workers:
                w.resume()
            assert time.monotonic() < t_end and proc.poll() is None, "no temporary file seen"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        _kill_group(proc)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not any(psutil.pid_exists(w.pid) and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    assert not parts(out)


@pytest.mark.slow
def test_a_lost_scheduler_is_exit_4_and_a_rerun_on_a_new_cluster_completes(tmp_path: Path, long_clip: Path) -> None:
    distributed = pytest.importorskip("distributed")
    inputs = _copies(long_clip, tmp_path / "in", 6)
    out = tmp_path / "out"
    procs: list[subprocess.Popen] = []

    def cluster(tag: str) -> tuple[str, subprocess.Popen]:
        port = free_port()
        address = f"tcp://127.0.0.1:{port}"
        scheduler = _dask("scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard",
                          cwd=tmp_path, log=tmp_path / f"scheduler-{tag}.log")
        procs.append(scheduler)
        procs.append(_dask("worker", address, "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1",
                           "--no-dashboard", cwd=tmp_path, log=tmp_path / f"worker-{tag}.log"))
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(1, timeout=120)
        return address, scheduler

    try:
        address, scheduler = cluster("a")
        run = subprocess.Popen([sys.executable, "-m", "streamer", "label", str(tmp_path / "in"), "-f", "csv",
                                "--out-dir", str(out), "--dask", address], cwd=ROOT, env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        procs.append(run)
        _wait_lines(out, 1, run)
        os.killpg(scheduler.pid, signal.SIGKILL)
        _, err = run.communicate(timeout=120)
        assert run.returncode == 4, err
        assert err.splitlines()[-1].startswith(f"emostream: error: lost the Dask scheduler at {address} with "), err
        assert "Traceback" not in err and "distributed" not in err, err  # none of the client's reconnection logs
        for p in procs[:2]:  # cluster a's worker too: a file it was still labelling would finish
            _kill_group(p)    # in between and make the rerun's outcome a race
        done_before = [x["path"] for x in manifest(out)]
        assert 1 <= len(done_before) < len(inputs) and {x["status"] for x in manifest(out)} == {"done"}
        # a worker may have renamed an output into place after the scheduler died, before its result
        # reached the manifest: that output is complete, and the rerun rightly skips it
        complete = {p.name for p in inputs if (out / f"{p.name}.csv").exists()}
        assert set(done_before) <= complete
        address, _ = cluster("b")
        r = cli("label", str(tmp_path / "in"), "-f", "csv", "--out-dir", str(out), "--dask", address)
        assert r.returncode == 0, r.stderr
    finally:
        for p in reversed(procs):
            _kill_group(p)
    last = {x["path"]: x["status"] for x in manifest(out)[len(done_before):]}
    assert last == {p.name: "skipped" if p.name in complete else "done" for p in inputs}
    assert not parts(out)
