"""Archives: many recordings labelled into a mirrored tree of outputs, on a local process pool or on
a Dask cluster (``label --out-dir``).

    emostream label INPUT [INPUT ...] --out-dir DIR [-f FORMAT] [--workers N | --dask ADDRESS]

The runner (this module) finds the inputs, decides what is already done, hands one task per file
to a backend, and records every outcome in ``DIR/manifest.jsonl`` as it arrives. Each task is
:func:`label_one`, which labels through :func:`write_label`, the function ``emostream label FILE``
uses too.

* Inputs (:func:`collect_inputs`): files, directories (walked for audio files by extension, hidden
  names skipped) and ``@LIST`` files (one file or directory per line; blank lines and ``#``
  comments skipped; relative lines are relative to the list's own directory). Each input has a
  *root*: a file's own directory, a directory itself, a list's directory for what lies under it.
  The output is ``DIR/<path relative to the root><format extension>``: ``calls/2024/a.wav`` given
  as ``calls`` with ``-f json`` becomes ``DIR/2024/a.wav.json``. The audio's own extension stays
  in the name so that ``a.wav`` and ``a.mp3`` never share an output.
* Resumable: every output is written by :func:`streamer.outputs.atomic_open` (a temporary
  ``.NAME.XXXXXXXX.partEXT`` beside the target, renamed when complete), so an output under its
  final name is complete and a rerun marks it ``skipped``. Temporary files left by a killed run or
  a killed worker are removed at the end of the next run that covers them.
* Manifest: one JSON line per input and run, ``{"path", "output", "status", "audio_s",
  "seconds", "error"}`` plus ``"run"`` (the run's start time, UTC, to the millisecond) and ``"warnings"`` when the
  decoder had some; appended and flushed line by line, so a killed run keeps what it finished.
  ``audio_s`` of a skipped input comes from its last ``done`` line. One run at a time per DIR (a
  lock on the manifest).
* Local backend (``--workers N``): a process pool (``spawn``: no threads or interpreter state
  inherited from the parent), the model loaded once per process by :func:`cached_model`. A worker
  process that dies (out of memory, a crashing decoder) breaks the pool: the pool is rebuilt and
  the files it held are retried; a file held by :data:`MAX_ATTEMPTS` dead pools fails.
* Dask backend (``--dask tcp://HOST:8786``, or ``local[:N]`` for a LocalCluster of N one-thread
  worker processes): one task per file. The model is loaded once per worker process by the same
  cached loader. Workers write the outputs themselves, straight into DIR, which must therefore be
  the same path on every worker (a shared file system): the inputs have to be there already (tasks
  carry paths, not audio, because shipping hours of audio through the scheduler would make the
  client the bottleneck), the atomic rename needs the temporary file and the target on one file
  system, and the client's memory stays flat however large the outputs. A task whose worker dies
  is rescheduled by Dask (``distributed.scheduler.allowed-failures``, default 3; beyond that the
  file fails with the ``KilledWorker`` error). A task that ran twice writes the same bytes twice:
  the rename makes the second replace the first, so every input ends with exactly one output.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Any, Callable, Iterator, Sequence

from streamer.errors import EmostreamError, InputError, ServiceUnavailable, UsageError

__all__ = [
    "AUDIO_EXTENSIONS",
    "MANIFEST",
    "MAX_ATTEMPTS",
    "Job",
    "LabelOptions",
    "Outcome",
    "Totals",
    "collect_inputs",
    "cached_model",
    "label_one",
    "write_label",
    "preflight",
    "run_archive",
    "default_workers",
]

# Extensions that a directory walk picks up: what libsndfile reads plus what the ffmpeg pipe reads.
AUDIO_EXTENSIONS = frozenset({
    ".wav", ".flac", ".ogg", ".oga", ".opus", ".aiff", ".aif", ".aifc", ".au", ".caf", ".w64", ".rf64",
    ".mp3", ".m4a", ".aac", ".mp4", ".mov", ".webm", ".mka", ".mkv", ".wma", ".amr", ".3gp",
})
MANIFEST = "manifest.jsonl"
MAX_ATTEMPTS = 3  # dead worker processes a file may take down before it fails (Dask's default too)
STOP_GRACE_S = 5.0  # after Ctrl-C, how long workers get to clean up before they are told, then made, to stop
CONNECT_TIMEOUT_S = 10.0  # how long an unreachable scheduler is tried before exit 4


# ----------------------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class Job:
    """One input file and where its output goes.

    Attributes:
        source: the path as the user gave it (written as the output's ``source``).
        path: the absolute path that workers open.
        rel: the path relative to its input root (the manifest's ``path``).
        output: the absolute output path.
        size: bytes of the input (0 when it cannot be read), for ETA and the longest-first order.
    """

    source: str
    path: str
    rel: str
    output: str
    size: int = 0


def _walk(directory: str) -> list[str]:
    """Audio files under a directory, sorted, hidden names (and our temporary files) skipped.

    Symbolic links to directories are followed (archives are often assembled from links), each
    real directory once, so a link back up the tree ends the walk instead of looping.
    """
    found: list[str] = []
    visited: set[str] = set()
    for here, dirs, files in os.walk(directory, followlinks=True):
        real = os.path.realpath(here)
        if real in visited:
            dirs[:] = []
            continue
        visited.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(here, f) for f in sorted(files)
                     if not f.startswith(".") and os.path.splitext(f)[1].lower() in AUDIO_EXTENSIONS)
    return found


def _under(path: str, root: str) -> bool:
    return os.path.commonpath([os.path.abspath(path), os.path.abspath(root)]) == os.path.abspath(root)


def _read_list(spec: str) -> list[tuple[str, str | None]]:
    """The entries of an ``@LIST`` file: (path as given, the list's directory as root or None)."""
    list_path = spec[1:]
    try:
        with open(list_path, encoding="utf-8", errors="surrogateescape") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise InputError(f"{list_path}: cannot read the input list ({exc.strerror or exc})", list_path) from None
    base = os.path.dirname(list_path)
    entries: list[tuple[str, str | None]] = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path = line if os.path.isabs(line) else os.path.join(base, line)
        entries.append((path, (base or ".") if _under(path, base or ".") else None))
    return entries


def collect_inputs(inputs: Sequence[str], out_dir: str, fmt: str) -> list[Job]:
    """Every input file with its output path, in the order given (walks sorted).

    A path that does not exist is kept as a job: it fails in the manifest like any unreadable
    input, and the others carry on.

    Raises:
        InputError: an unreadable ``@LIST``, or no input at all.
        UsageError: two different inputs that would write the same output.
    """
    from streamer.formats import EXTENSIONS
    from streamer.outputs import display_name

    ext = EXTENSIONS[fmt]
    entries: list[tuple[str, str | None]] = []
    for spec in inputs:
        entries.extend(_read_list(spec) if spec.startswith("@") else [(spec, None)])
    jobs: list[Job] = []
    seen: set[str] = set()  # absolute inputs
    owner: dict[str, str] = {}  # rel -> the absolute input that writes it
    for path, root in entries:
        if os.path.isdir(path):
            files = _walk(path)
            root = root if root is not None else path
        else:
            files = [path]
            root = root if root is not None else (os.path.dirname(path) or ".")
        for f in files:
            absolute = os.path.abspath(f)
            if absolute in seen:
                continue  # the same file reached twice (a directory and a file in it): once
            rel = os.path.relpath(absolute, os.path.abspath(root))
            if rel in owner:
                raise UsageError(f"{display_name(owner[rel])} and {display_name(absolute)} would both be "
                                 f"written to {display_name(os.path.join(out_dir, rel + ext))}")
            seen.add(absolute)
            owner[rel] = absolute
            try:
                size = os.stat(absolute).st_size
            except OSError:
                size = 0
            jobs.append(Job(source=f, path=absolute, rel=rel,
                            output=os.path.abspath(os.path.join(out_dir, rel + ext)), size=size))
    if not jobs:
        raise InputError("no audio files among the inputs: " + " ".join(display_name(s) for s in inputs))
    return jobs


# ----------------------------------------------------------------------------------------- labelling

@dataclass(frozen=True)
class LabelOptions:
    """What ``label`` is asked for, the same for every file (picklable: it travels with each task)."""

    format: str = "json"
    model: str | None = None
    window: float | None = None
    hop: float | None = None
    channels: str = "mix"
    channel_names: tuple[str, ...] | None = None
    alert_rules: tuple[Any, ...] = ()


@dataclass
class Outcome:
    """What happened to one input in one run (a manifest line)."""

    path: str
    output: str
    status: str  # "done" | "skipped" | "failed"
    audio_s: float | None = None
    seconds: float = 0.0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_json(self, run: str) -> str:
        """The manifest line (no newline)."""
        obj: dict[str, Any] = {"path": self.path, "output": self.output, "status": self.status,
                               "audio_s": self.audio_s, "seconds": self.seconds, "error": self.error,
                               "run": run}
        if self.warnings:
            obj["warnings"] = self.warnings
        return json.dumps(obj, ensure_ascii=False)


_MODELS: dict[tuple[Any, ...], Any] = {}
_MODELS_LOCK = threading.Lock()


def _keep_freed_memory() -> None:
    """Let malloc keep freed memory for reuse in a process where a tiny trim threshold was set.

    Dask's nanny starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536``
    (``distributed.nanny.pre-spawn-environ``). Setting it switches off glibc's adaptive thresholds,
    so every array over 128 KiB is a fresh mmap and its pages fault in again: measured here, 107 000
    page faults per 4-minute file and twice the CPU time of the same labelling in a plain process.
    With the mmap threshold at glibc's own adaptive maximum (32 MiB) and a trim threshold of twice
    that, the pipeline reuses its memory (under a hundred page faults) and a worker holds at most a
    few tens of MiB more. A user's explicit ``MALLOC_MMAP_THRESHOLD_`` is left alone.
    """
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
        libc.mallopt(m_mmap_threshold, 32 << 20)
        libc.mallopt(m_trim_threshold, 64 << 20)
    except (OSError, AttributeError):  # not glibc: its malloc does not read these variables either
        pass


def cached_model(model: str | None, window: float | None, hop: float | None) -> tuple[Any, Any]:
    """(metadata, classifier) for these options, loaded once per process and then reused.

    Local pool processes and Dask worker processes both call this at every task: the first task
    of a process pays for the model, the others find it here. The classifier serialises its own
    calls, so threads of one Dask worker may share it.
    """
    key = (model, window, hop)
    with _MODELS_LOCK:
        if key not in _MODELS:
            from streamer.labelling import load_model

            if not _MODELS:
                _keep_freed_memory()
            _MODELS[key] = load_model(model, window, hop)
        return _MODELS[key]


def write_label(source: Any, out: IO[str], fmt: str, meta: Any, clf: Any, *, channels: str = "mix",
                channel_names: Sequence[str] | None = None, alert_rules: Sequence[Any] | None = None,
                on_event: Callable[[Any], None] | None = None, progress: bool = False) -> Any:
    """Label one source into one output stream in one format; the :class:`~streamer.labelling.Analysis`.

    The one labelling of a file to a format: ``emostream label FILE`` and every archive task call
    it. ``on_event`` sees each event after the writer (a summary, a plot). Alert rules that name a
    channel the recording does not have are refused when its header is known.
    """
    from streamer.alerts import check_channels
    from streamer.formats import open_writer
    from streamer.labelling import analyse

    writer = open_writer(fmt, out)
    rules = list(alert_rules) if alert_rules else None

    def on_header(info: dict[str, Any]) -> None:
        if rules:
            check_channels(rules, info["channels"])  # a rule for a channel that is not there never fires
        writer.header(info)

    def sink(ev: Any) -> None:
        writer.event(ev)
        if on_event is not None:
            on_event(ev)

    res = analyse(source, meta, clf, channels=channels, channel_names=list(channel_names) if channel_names else None,
                  alert_rules=rules, on_header=on_header, on_event=sink, progress=progress)
    writer.close(duration=res.duration)
    return res


def preflight(opts: LabelOptions) -> None:
    """Load the model and run four seconds of quiet noise through the whole chain, here, once.

    A model, speech detector or option that cannot work fails the run at start (one line, its
    own exit status) instead of failing every file of an archive one by one on the workers.
    """
    import io

    import numpy as np

    from streamer.sources import ArraySource

    meta, clf = cached_model(opts.model, opts.window, opts.hop)
    sr = int(meta.features.sample_rate)
    noise = (np.random.default_rng(0).standard_normal(4 * sr) * 1e-3).astype(np.float32)
    write_label(ArraySource(noise, sr, uri="preflight"), io.StringIO(), opts.format, meta, clf)


def _write_output(job: Job, opts: LabelOptions, meta: Any, clf: Any) -> tuple[float, list[str]]:
    """Label one file into its output atomically; (audio seconds, decoder warnings)."""
    from streamer.outputs import atomic_open
    from streamer.sources import open_source

    source = open_source(job.path)  # a bad input fails before its output exists
    source.uri = job.source  # outputs name the file as the user gave it, whatever the worker's cwd
    with source, atomic_open(job.output) as fh:
        res = write_label(source, fh, opts.format, meta, clf, channels=opts.channels,
                          channel_names=opts.channel_names, alert_rules=opts.alert_rules)
    return res.duration, list(res.stats.warnings)


def label_one(job: Job, opts: LabelOptions, out_dir: str) -> Outcome:
    """Label one input into its output (runs in a worker process); never raises for a bad file."""
    from streamer.outputs import display_name

    t0 = time.perf_counter()
    rel_out = display_name(os.path.relpath(job.output, out_dir))
    try:
        meta, clf = cached_model(opts.model, opts.window, opts.hop)
        os.makedirs(os.path.dirname(job.output), exist_ok=True)
        audio_s, warnings = _write_output(job, opts, meta, clf)
    except Exception as exc:  # EmostreamError, or a library failing on one odd file: never stop the archive
        text = str(exc) if isinstance(exc, EmostreamError) else f"{type(exc).__name__}: {exc}"
        # messages name the file as the user gave it, not as this worker opened it
        return Outcome(display_name(job.rel), rel_out, "failed", None, round(time.perf_counter() - t0, 3),
                       display_name(text.replace(job.path, job.source)))
    return Outcome(display_name(job.rel), rel_out, "done", round(audio_s, 3),
                   round(time.perf_counter() - t0, 3), None, warnings)


def _failed(job: Job, out_dir: str, error: str) -> Outcome:
    from streamer.outputs import display_name

    return Outcome(display_name(job.rel), display_name(os.path.relpath(job.output, out_dir)), "failed",
                   None, 0.0, error)


# ----------------------------------------------------------------------------------------- backends

def default_workers() -> int:
    """One process per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _init_pool_process() -> None:
    # One thread per process: the pool is the parallelism, more threads would only fight for cores.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, "1")


@contextlib.contextmanager
def _interrupt_flag() -> Iterator[threading.Event]:
    """While the pool runs, Ctrl-C sets an event instead of raising where it lands: a KeyboardInterrupt
    inside the executor's own locking (``wait``, ``submit``) can leave a lock held, and the exit then
    waits for it forever. The loop raises KeyboardInterrupt itself, between two waits."""
    import signal

    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.signal(signal.SIGINT, lambda *_: flag.set())
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_workers(workers: list[Any]) -> None:
    """Bounded stop of an interrupted pool's processes: a terminal's Ctrl-C reached them too, so they
    get :data:`STOP_GRACE_S` to remove their temporary files and exit; then Ctrl-C of their own (only
    this process was interrupted), then SIGTERM, then SIGKILL."""
    import signal

    def interrupt(p: Any) -> None:
        os.kill(p.pid, signal.SIGINT)

    for escalate in (interrupt, lambda p: p.terminate(), lambda p: p.kill()):
        deadline = time.monotonic() + STOP_GRACE_S
        for p in workers:
            p.join(max(0.0, deadline - time.monotonic()))
        alive = [p for p in workers if p.is_alive()]
        if not alive:
            return
        for p in alive:
            with contextlib.suppress(OSError):
                escalate(p)
    for p in workers:  # killed: gone as soon as the kernel has reaped them
        p.join(STOP_GRACE_S)


class LocalBackend:
    """A pool of ``workers`` processes on this machine."""

    def __init__(self, workers: int | None = None):
        self.workers = workers or default_workers()
        self.name = f"{self.workers} local worker{'s' if self.workers != 1 else ''}"

    def run(self, jobs: list[Job], opts: LabelOptions, out_dir: str) -> Iterator[Outcome]:
        """Yield one outcome per job, as they finish."""
        import multiprocessing

        queue = deque(jobs)
        attempts: dict[str, int] = {}
        ctx = multiprocessing.get_context("spawn")
        with _interrupt_flag() as interrupted:
            while queue:
                yield from self._one_pool(queue, attempts, ctx, interrupted, opts, out_dir)

    def _one_pool(self, queue: deque, attempts: dict[str, int], ctx: Any, interrupted: threading.Event,
                  opts: LabelOptions, out_dir: str) -> Iterator[Outcome]:
        """Run the queue on one pool until it is empty or the pool breaks (its lost files go back)."""
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool

        pool = ProcessPoolExecutor(max_workers=min(self.workers, len(queue)), mp_context=ctx,
                                   initializer=_init_pool_process)
        inflight: dict[Any, Job] = {}
        lost: list[Job] = []
        try:
            while queue or inflight:
                # no more in flight than processes: when one dies, the files it may have been
                # labelling are exactly the ones in flight
                while queue and len(inflight) < self.workers:
                    job = queue.popleft()
                    inflight[pool.submit(label_one, job, opts, out_dir)] = job
                done: set = set()
                while not done:
                    if interrupted.is_set():
                        raise KeyboardInterrupt
                    done, _ = wait(inflight, timeout=0.2, return_when=FIRST_COMPLETED)
                for fut in done:
                    job = inflight[fut]  # popped once its result is in: a worker's Ctrl-C leaves it in flight
                    try:
                        outcome = fut.result()
                    except BrokenProcessPool:
                        del inflight[fut]
                        lost.append(job)
                        continue
                    del inflight[fut]
                    yield outcome
                if lost:
                    lost.extend(inflight.values())
                    inflight.clear()
                    break
        except KeyboardInterrupt:  # also a worker's, handed back as its task's result
            interrupted.set()
            raise
        finally:
            workers = list((pool._processes or {}).values())  # shutdown forgets them
            pool.shutdown(wait=not lost and not inflight, cancel_futures=True)
            if interrupted.is_set():
                _stop_workers(workers)
                # the workers are gone: a temporary file of a file they were writing is theirs, left when
                # the interrupt landed where their own clean-up could not run (or the stop had to kill them)
                for job in inflight.values():
                    for part in _stale_parts(job.output):
                        with contextlib.suppress(OSError):
                            os.unlink(part)
        for job in reversed(lost):
            attempts[job.path] = attempts.get(job.path, 0) + 1
            if attempts[job.path] >= MAX_ATTEMPTS:
                yield _failed(job, out_dir, f"a worker process died while labelling it "
                                            f"({MAX_ATTEMPTS} times)")
            else:
                queue.appendleft(job)

    def close(self) -> None:
        """Nothing to release: each run's pool is shut down when it ends."""


class DaskBackend:
    """One task per file on a Dask cluster: ``tcp://HOST:PORT`` (any address a Client takes), or
    ``local`` / ``local:N`` for a LocalCluster of N one-thread worker processes (default: one per core).

    Raises:
        UsageError: ``distributed`` is not installed (the ``cluster`` extra).
        ServiceUnavailable: the scheduler cannot be reached within :data:`CONNECT_TIMEOUT_S`.
    """

    def __init__(self, address: str):
        try:
            import distributed
        except ImportError:
            raise UsageError("--dask needs the 'cluster' extra: pip install 'emostream[cluster]'") from None
        import logging

        # Our own lines say what went wrong (one line, an exit status, the manifest); distributed's
        # client-side logs would add reconnection tracebacks to stderr.
        for name in ["distributed", *logging.root.manager.loggerDict]:  # its config sets child levels
            if name == "distributed" or name.startswith("distributed."):
                logging.getLogger(name).setLevel(logging.CRITICAL)
        self._distributed = distributed
        self.address = address
        self.cluster = None
        if address == "local" or address.startswith("local:"):
            n = default_workers()
            if address.startswith("local:"):
                try:
                    n = int(address[6:])
                except ValueError:
                    n = 0
                if n < 1:
                    raise UsageError(f"--dask {address}: local:N needs a positive number of workers")
            self.cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                                    dashboard_address=None, silence_logs=logging.CRITICAL)
            self.client = distributed.Client(self.cluster)
            self.name = f"a local Dask cluster of {n} worker{'s' if n != 1 else ''}"
        else:
            try:
                self.client = distributed.Client(address, timeout=CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError, ValueError) as exc:
                detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise ServiceUnavailable(f"cannot reach the Dask scheduler at {address}: {detail}") from None
            n = len(self.client.scheduler_info().get("workers", {}))
            self.name = f"the Dask cluster at {address} ({n} worker{'s' if n != 1 else ''} at start)"

    def run(self, jobs: list[Job], opts: LabelOptions, out_dir: str) -> Iterator[Outcome]:
        """Submit every job as one task; yield outcomes as they complete.

        Raises:
            ServiceUnavailable: the connection to the scheduler was lost: the files not finished by then
                are not failures of theirs, so they get no manifest line and a rerun does them.
        """
        if not jobs:
            return
        dist = self._distributed
        token = uuid.uuid4().hex[:8]
        futures = {}
        for i, job in enumerate(jobs):
            key = f"emostream-label-{token}-{i}"  # named in the dashboard; unique per run
            futures[self.client.submit(label_one, job, opts, out_dir, key=key, pure=False)] = job
        finished = 0
        try:
            for fut in dist.as_completed(list(futures)):
                job = futures[fut]
                try:
                    outcome = fut.result()
                except Exception as exc:  # KilledWorker (the file took down workers), a lost cluster
                    if getattr(exc, "reason", None) == "scheduler-connection-lost":
                        left = len(jobs) - finished
                        raise ServiceUnavailable(f"lost the Dask scheduler at {self.address} with {left} of "
                                                 f"{len(jobs)} inputs not labelled; run the same command "
                                                 "again to continue") from None
                    detail = str(exc).splitlines()[0] if str(exc) else ""
                    outcome = _failed(job, out_dir, f"{type(exc).__name__}: {detail}".rstrip(": "))
                fut.release()
                finished += 1
                yield outcome
        finally:
            with contextlib.suppress(Exception):  # nothing to cancel on a scheduler that is gone
                self.client.cancel([f for f in futures if not f.done()])

    def close(self) -> None:
        """Disconnect (and stop a LocalCluster this backend started)."""
        with contextlib.suppress(Exception):
            self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()


# ----------------------------------------------------------------------------------------- runner

@dataclass
class Totals:
    """A run's counts, for the summary line and the exit status."""

    files: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    audio_s: float = 0.0  # labelled in this run (skipped inputs not counted)
    wall_s: float = 0.0
    backend: str = ""
    manifest: str = ""

    def add(self, o: Outcome) -> None:
        """Count one outcome."""
        setattr(self, o.status, getattr(self, o.status) + 1)
        if o.status == "done" and o.audio_s:
            self.audio_s += o.audio_s

    def summary(self) -> str:
        """One line: counts, audio hours, speed."""
        rate = self.audio_s / self.wall_s if self.wall_s > 0 else 0.0
        return (f"{self.files} input{'s' if self.files != 1 else ''}: {self.done} done, {self.skipped} skipped, "
                f"{self.failed} failed; {self.audio_s / 3600:.2f} h of audio labelled in "
                f"{_clock(self.wall_s)} ({rate:.0f} h per hour) on {self.backend}; manifest {self.manifest}")


def _clock(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class _ProgressBar:
    """One line on stderr, redrawn as files finish: files, audio hours, hours per hour, ETA.

    The ETA scales the time so far by the input bytes still to go over the bytes labelled (the
    audio's duration is known only once a file is decoded).
    """

    def __init__(self, stream: IO[str], files: int, todo_bytes: int, enabled: bool):
        self.stream, self.files, self.todo_bytes, self.on = stream, files, max(1, todo_bytes), enabled
        self.count = 0
        self.audio_s = 0.0
        self.bytes = 0
        self.t0 = time.monotonic()
        self._last = 0.0

    def add(self, o: Outcome, size: int, labelled: bool) -> None:
        self.count += 1
        if labelled:
            self.bytes += size
            self.audio_s += o.audio_s or 0.0
        now = time.monotonic()
        if self.on and (now - self._last > 0.2 or self.count == self.files):
            self._last = now
            dt = now - self.t0
            rate = self.audio_s / dt if dt > 0 else 0.0
            eta = dt * (self.todo_bytes - self.bytes) / self.bytes if self.bytes else None
            pct = int(100 * self.count / max(1, self.files))
            self.stream.write(f"\r[{'#' * (pct // 5):<20}] {self.count}/{self.files} files  "
                              f"{self.audio_s / 3600:.2f} h audio  {rate:.0f} h/h  "
                              f"ETA {_clock(eta) if eta is not None else '?'}  ")
            self.stream.flush()

    def done(self) -> None:
        if self.on and self.count:
            self.stream.write("\n")
            self.stream.flush()


class _Manifest:
    """``DIR/manifest.jsonl``, appended one whole line per write, locked for the run's length."""

    def __init__(self, path: str):
        import fcntl

        from streamer.outputs import OutputError, display_name

        self.path = path
        try:
            self.fh = open(path, "a", encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"cannot write {display_name(path)}: {exc.strerror or exc}", path) from None
        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.close()
            raise UsageError(f"another run is writing to {display_name(os.path.dirname(path))} "
                             f"(its {MANIFEST} is locked)") from None

    def previous_audio(self) -> dict[str, float]:
        """``audio_s`` of each path's last ``done`` line (what a skipped input reports)."""
        found: dict[str, float] = {}
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue  # a line cut by a crash on a full disk: nothing to recover from it
                if isinstance(obj, dict) and obj.get("status") == "done" and obj.get("audio_s") is not None:
                    found[str(obj.get("path"))] = obj["audio_s"]
        return found

    def write(self, o: Outcome, run: str) -> None:
        self.fh.write(o.to_json(run) + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def _stale_parts(output: str) -> list[str]:
    """Temporary files of ``atomic_open`` for this output (``.NAME.XXXXXXXX.partEXT``) left by a
    process that was killed while writing it."""
    directory, base = os.path.split(output)
    stem, ext = os.path.splitext(base)
    return glob.glob(os.path.join(glob.escape(directory), f".{glob.escape(stem)}.{'[!.]' * 8}.part{glob.escape(ext)}"))


def run_archive(jobs: list[Job], out_dir: str, opts: LabelOptions, backend: LocalBackend | DaskBackend,
                *, progress: bool | None = None, stream: IO[str] | None = None) -> Totals:
    """Label every job not already done, record each outcome in the manifest; the run's totals.

    Args:
        jobs: from :func:`collect_inputs`.
        out_dir: the output directory (created if missing).
        opts: the labelling options.
        backend: where the work runs; closed by the caller.
        progress: draw the progress bar (default: when ``stream`` is a terminal).
        stream: for the progress bar (default: stderr).
    """
    from streamer.outputs import OutputError, display_name

    stream = stream if stream is not None else sys.stderr
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {display_name(out_dir)}: {exc.strerror or exc}", out_dir) from None
    # milliseconds: a rerun that starts within the same second as the last run must not share its id
    run = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    manifest = _Manifest(os.path.join(out_dir, MANIFEST))
    totals = Totals(files=len(jobs), backend=backend.name, manifest=display_name(manifest.path))
    t0 = time.perf_counter()
    try:
        previous = manifest.previous_audio()
        pending: list[Job] = []
        skipped: list[Outcome] = []
        for job in jobs:
            if os.path.isfile(job.output):  # only complete outputs ever carry the final name
                rel = display_name(job.rel)
                skipped.append(Outcome(rel, display_name(os.path.relpath(job.output, out_dir)), "skipped",
                                       previous.get(rel)))
            else:
                pending.append(job)
        pending.sort(key=lambda j: -j.size)  # longest first: the last files to finish are short ones
        sizes = {j.path: j.size for j in pending}
        by_rel = {display_name(j.rel): j for j in pending}
        bar = _ProgressBar(stream, len(jobs), sum(sizes.values()),
                           stream.isatty() if progress is None else progress)
        for o in skipped:
            manifest.write(o, run)
            totals.add(o)
            bar.add(o, 0, labelled=False)
        for o in backend.run(pending, opts, out_dir):
            manifest.write(o, run)
            totals.add(o)
            job = by_rel.get(o.path)
            bar.add(o, job.size if job else 0, labelled=True)
        bar.done()
        for job in jobs:  # nothing of this run is still writing: what is left is a killed writer's
            for part in _stale_parts(job.output):
                with contextlib.suppress(OSError):
                    os.unlink(part)
    finally:
        manifest.close()
        totals.wall_s = time.perf_counter() - t0
    return totals
