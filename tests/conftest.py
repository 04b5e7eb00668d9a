"""Shared fixtures and helpers: the shipped model, fixture clips, audio files, the command line, free
ports, stopping processes; and the default test selection.

Markers (registered in pyproject.toml): ``slow`` (more than ~10 s), ``browser`` (Chromium), ``mic``
(PulseAudio/PortAudio capture), ``train`` (TensorFlow). A plain ``pytest -q`` runs the fast rest, for
development; ``pytest -q --all`` (README's and CI's command) runs everything. Naming test files or
tests on the command line, or any ``-m``, runs what was asked for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tools.local_cluster import free_port  # noqa: F401  (one definition, shared with the cluster tools)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXAMPLE = ROOT / "streamer" / "examples" / "conversation.flac"


@pytest.fixture(scope="session")
def model():
    """(meta, classifier) of the shipped model."""
    from streamer.labelling import load_model

    return load_model()


@pytest.fixture(scope="session")
def clips() -> dict[str, Path]:
    """Fixture clips by true label (angry, sad, happy, neutral)."""
    from streamer.config import DEFAULT_LABELS

    out = {}
    for p in sorted(FIXTURES.glob("*.flac")):
        out[DEFAULT_LABELS[int(p.name.split("-")[2]) - 1]] = p
    return out


def read_mono(path: Path) -> tuple[np.ndarray, int]:
    y, sr = sf.read(path, dtype="float32", always_2d=True)
    return y.mean(axis=1), sr


def ffmpeg(*args: str) -> None:
    """Run the bundled ffmpeg (imageio-ffmpeg) quietly; fail the test on error."""
    from streamer.sources import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", *args], check=True)


def emostream(*args: str | os.PathLike[str], input: bytes | None = None, timeout: float = 120,
              cwd: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess:
    """Run the command line in a subprocess, as a user would (stdout/stderr as bytes).

    ``cwd`` defaults to the repository; from elsewhere the package is found through PYTHONPATH.
    """
    env = {**os.environ, **(env or {})}
    if cwd is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "streamer", *map(os.fspath, args)], capture_output=True,
                          input=input, timeout=timeout, cwd=cwd or ROOT, env=env)


def cli(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess:
    """Run the command line in this process (no interpreter start-up: for the many bad-input cases);
    the result looks like :func:`emostream`'s (stdout/stderr as bytes)."""
    import contextlib
    import io

    from streamer.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = [os.fspath(a) for a in args]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # --help, --version
            code = exc.code if isinstance(exc.code, int) else 0
    return subprocess.CompletedProcess(["emostream", *argv], code, out.getvalue().encode(), err.getvalue().encode())


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> int:
    """Stop a child (SIGTERM, then SIGKILL after ``timeout``); its whole group if it leads one.

    Returns its exit status. Safe on a process that has already ended.
    """
    group = False
    try:
        group = os.getpgid(proc.pid) == proc.pid
    except OSError:
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        try:
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait(timeout)


# -- default selection ------------------------------------------------------------------------------

OPTIONAL_MARKERS = ("slow", "browser", "mic", "train")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--all", action="store_true",
                     help=f"also run the tests marked {', '.join(OPTIONAL_MARKERS)} (README's and CI's command)")


def _asked_for_tests(config: pytest.Config) -> bool:
    """True when the command line names test files or tests (not just the test directory)."""
    for arg in config.args:
        path = Path(arg.split("::", 1)[0])
        if "::" in arg or path.is_file():
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--all") or config.option.markexpr or _asked_for_tests(config):
        return
    keep, later = [], []
    for item in items:
        (later if any(item.get_closest_marker(m) for m in OPTIONAL_MARKERS) else keep).append(item)
    if later:
        config.hook.pytest_deselected(items=later)
        items[:] = keep
        config.stash[_LEFT_ASIDE] = len(later)


_LEFT_ASIDE = pytest.StashKey[int]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # "no tests collected" (exit 5) is a failure only when there was nothing to run, not when the
    # fast selection left every collected test aside
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and session.config.stash.get(_LEFT_ASIDE, 0):
        session.exitstatus = pytest.ExitCode.OK


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    n = config.stash.get(_LEFT_ASIDE, 0)
    if n:
        terminalreporter.write_line(f"{n} tests marked {'/'.join(OPTIONAL_MARKERS)} left out: "
                                    "`pytest -q --all` runs everything (README, CI)")
