"""Shared fixtures: the shipped model, fixture clips, and helpers that make audio files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

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


def emostream(*args: str, input: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the command line in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "streamer", *args], capture_output=True, input=input,
                          timeout=timeout, cwd=ROOT)
