"""Archive benchmark: audio hours labelled per wall-clock hour, sequential and scaled out.

An archive of ``--files`` recordings of ``--minutes`` minutes each (the bundled example
conversation, looped; 16 kHz mono FLAC, each copy's first second rotated so no two files are
identical) is labelled to JSON, each configuration into a fresh output directory:

1. ``sequential``: :func:`streamer.archive.label_one` over every file in this process, one after
   the other (the model loaded once, before the clock starts): the baseline.
2. ``pool-1``, ``pool-2``: ``run_archive`` with a local process pool of 1 and 2 workers (the
   clock includes starting the processes and loading the model in each, as a user sees it).
3. ``dask-2``: ``run_archive`` on a real cluster started here from the ``dask`` command: one
   scheduler and two ``dask worker --nthreads 1`` processes on 127.0.0.1 (the clock starts once
   the workers are up and includes connecting and loading the model in each worker).

With ``--repeat R`` the configurations run R rounds, interleaved (so a burst of other work hits
them alike), and the report gives each one's median and best wall time; rates are from the median.
CPU time (user + system, of this process, the pool's processes, the scheduler and the workers)
gives audio hours per CPU hour, which other work on the machine skews much less than wall time.
Every process runs one BLAS thread (this one sets it before NumPy loads; the pool and Dask
workers do the same), so the comparison is of processes, not of BLAS threading; every
configuration's outputs are checked to be the same bytes as the first's. The scaling factor is
hours per hour over the sequential baseline's. The machine's load average (1 min) is recorded
before and after each configuration: other work on the machine skews the figures, and the report
says so.

    python -m tools.bench_archive                              # 24 files x 4 min
    python -m tools.bench_archive --files 40 --minutes 5 --json bench_archive.json
    python -m tools.bench_archive --only sequential,pool-2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Before anything imports NumPy: the baseline runs one BLAS thread like every worker process.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parents[1]

EXAMPLE = ROOT / "streamer" / "examples" / "conversation.flac"
CONFIGS = ("sequential", "pool-1", "pool-2", "dask-2")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_archive(directory: Path, files: int, minutes: float) -> float:
    """Write the recordings; their total duration in seconds."""
    import numpy as np
    import soundfile as sf

    y, sr = sf.read(EXAMPLE, dtype="float32")
    n = int(minutes * 60 * sr)
    base = np.tile(y, 1 + n // len(y))[:n]
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        sf.write(directory / f"call{i:03d}.flac", np.roll(base, i * sr // max(1, files)), sr)
    return files * n / sr


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def cpu_seconds(live: list[int]) -> float:
    """User + system CPU seconds of this process, its reaped children, and the live processes
    ``live`` with all their descendants (the Dask scheduler, nannies and worker processes)."""
    import psutil

    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    for pid in live:
        try:
            top = psutil.Process(pid)
            for p in [top] + top.children(recursive=True):
                c = p.cpu_times()
                total += c.user + c.system
        except psutil.Error:
            pass
    return total


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.glob("*.json")}


def run_sequential(jobs: list, opts, out: Path) -> float:
    from streamer.archive import cached_model, label_one

    cached_model(opts.model, opts.window, opts.hop)  # the baseline's model is loaded before the clock
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    for job in jobs:
        outcome = label_one(job, opts, str(out))
        assert outcome.status == "done", outcome
    return time.perf_counter() - t0


def run_backend(jobs: list, opts, out: Path, backend) -> float:
    from streamer.archive import run_archive

    t0 = time.perf_counter()
    try:
        totals = run_archive(jobs, str(out), opts, backend, progress=False)
    finally:
        backend.close()
    assert totals.done == len(jobs), totals
    return time.perf_counter() - t0


def start_dask(workers: int, cwd: Path) -> tuple[str, list[subprocess.Popen]]:
    """A scheduler and ``workers`` one-thread workers on 127.0.0.1, up and registered."""
    import distributed

    exe = str(Path(sys.executable).with_name("dask"))
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": cwd, "start_new_session": True}
    procs = [subprocess.Popen([exe, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], **quiet)]
    for i in range(workers):
        procs.append(subprocess.Popen([exe, "worker", address, "--nthreads", "1", "--name", f"w{i}",
                                       "--host", "127.0.0.1", "--no-dashboard"], **quiet))
    with distributed.Client(address, timeout=60) as client:
        client.wait_for_workers(workers, timeout=180)
    return address, procs


def stop(procs: list[subprocess.Popen]) -> None:
    import signal

    for p in reversed(procs):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            p.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench_archive", description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=24)
    ap.add_argument("--minutes", type=float, default=4.0, help="length of each recording")
    ap.add_argument("--only", default=",".join(CONFIGS), help="configurations, comma-separated: " + ",".join(CONFIGS))
    ap.add_argument("--repeat", type=int, default=1, help="rounds of every configuration (interleaved)")
    ap.add_argument("--json", metavar="PATH", help="also write the report here")
    args = ap.parse_args(argv)
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    bad = [c for c in only if c not in CONFIGS]
    if bad:
        ap.error(f"unknown configuration(s): {', '.join(bad)}")

    from streamer.archive import DaskBackend, LabelOptions, LocalBackend, collect_inputs

    tmp = Path(tempfile.mkdtemp(prefix="bench_archive."))
    procs: list[subprocess.Popen] = []
    walls: dict[str, list[float]] = {name: [] for name in only}
    loads: dict[str, list[float]] = {name: [] for name in only}
    cpus: dict[str, list[float]] = {name: [] for name in only}
    equal: dict[str, bool | None] = {}
    try:
        audio_s = make_archive(tmp / "in", args.files, args.minutes)
        opts = LabelOptions(format="json")
        print(f"archive: {args.files} files x {args.minutes:g} min = {audio_s / 3600:.2f} h of audio; "
              f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}", flush=True)
        reference: dict[str, bytes] | None = None
        for name, rnd in [(n, r) for r in range(args.repeat) for n in only]:
            out = tmp / f"out-{name}"
            jobs = collect_inputs([str(tmp / "in")], str(out), "json")
            load_before = _load()
            if name == "sequential":
                cpu0 = cpu_seconds([])
                wall = run_sequential(jobs, opts, out)
            elif name.startswith("pool-"):  # the pool's processes are reaped when it shuts down
                cpu0 = cpu_seconds([])
                wall = run_backend(jobs, opts, out, LocalBackend(int(name[5:])))
            else:
                address, procs = start_dask(2, tmp)
                load_before = _load()
                cpu0 = cpu_seconds([p.pid for p in procs])
                wall = run_backend(jobs, opts, out, DaskBackend(address))
            cpu = cpu_seconds([p.pid for p in procs]) - cpu0
            if procs:
                stop(procs)
                procs = []
            cpus[name].append(cpu)
            load_after = _load()
            got = _outputs(out)
            if reference is None:
                reference = got
            same = got == reference
            equal[name] = same and equal.get(name, True)
            walls[name].append(wall)
            loads[name] += [load_before, load_after]
            print(f"round {rnd + 1} {name:<11} {wall:8.2f} s  {audio_s / wall:8.1f} h/h  "
                  f"{audio_s / cpu:6.1f} h/CPU-h  "
                  f"load {load_before:.2f} -> {load_after:.2f}"
                  + f"  outputs {'equal' if same else 'DIFFER'}", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    finally:
        stop(procs)
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for name in only:
        med = statistics.median(walls[name])
        rows.append({"config": name, "wall_s_median": round(med, 2), "wall_s_best": round(min(walls[name]), 2),
                     "hours_per_hour": round(audio_s / med, 1),
                     "hours_per_hour_best": round(audio_s / min(walls[name]), 1),
                     "audio_h_per_cpu_h": round(audio_s / statistics.median(cpus[name]), 1),
                     "load_min": min(loads[name]), "load_max": max(loads[name]),
                     "outputs_equal": equal.get(name)})
    base = next((r["hours_per_hour"] for r in rows if r["config"] == "sequential"), None)
    print(f"\n{'config':<11} {'median s':>9} {'h/h':>8} {'best h/h':>9} {'scaling':>8} {'h/CPU-h':>8}  load (1 min)")
    for r in rows:
        r["scaling"] = round(r["hours_per_hour"] / base, 2) if base else None
        scaling = f"{r['scaling']:.2f}x" if base else "-"
        print(f"{r['config']:<11} {r['wall_s_median']:9.2f} {r['hours_per_hour']:8.1f} {r['hours_per_hour_best']:9.1f} "
              f"{scaling:>8} {r['audio_h_per_cpu_h']:8.1f}  {r['load_min']:.1f}-{r['load_max']:.1f}")
    report = {"files": args.files, "minutes": args.minutes, "repeat": args.repeat, "audio_h": round(audio_s / 3600, 3),
              "cpu_count": os.cpu_count(), "machine": platform.platform(), "python": platform.python_version(),
              "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(r["outputs_equal"] is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
