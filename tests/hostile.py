"""Hostile and broken inputs for the hardening tests: hand-made WAV headers, cut files, odd names."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import soundfile as sf


def tone(seconds: float = 1.0, rate: int = 16000) -> np.ndarray:
    """A quiet 1.27 kHz-ish tone, float32 [n]."""
    return (0.25 * np.sin(np.arange(int(seconds * rate)) * 0.5)).astype(np.float32)


def wav_bytes(*, tag: int = 1, channels: int = 1, rate: int = 16000, bits: int = 16, block: int | None = None,
              data: bytes | None = None, data_len: int | None = None, riff_len: int | None = None) -> bytes:
    """A WAV file whose header says whatever it is told (lengths default to the truth)."""
    if data is None:
        data = (tone() * 32767).astype("<i2").tobytes()
    block = channels * bits // 8 if block is None else block
    fmt = struct.pack("<HHIIHH", tag, channels & 0xFFFF, rate & 0xFFFFFFFF, (rate * block) & 0xFFFFFFFF,
                      block & 0xFFFF, bits)
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data"
            + struct.pack("<I", len(data) if data_len is None else data_len) + data)
    return b"RIFF" + struct.pack("<I", len(body) if riff_len is None else riff_len) + body


def flac_bytes(seconds: float = 3.0) -> bytes:
    """A valid FLAC file of noise-like audio (so it does not compress to a few bytes)."""
    import io

    y = (np.random.default_rng(0).standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, y, 16000, format="FLAC")
    return buf.getvalue()


def bad_inputs(d: Path) -> dict[str, Path]:
    """The 13 broken inputs of issue 16 that must fail cleanly and leave no output, by name."""
    flac = flac_bytes()
    files = {
        "bits0.wav": wav_bytes(bits=0),
        "channels0.wav": wav_bytes(channels=0, block=2),
        "tag99.wav": wav_bytes(tag=99),
        "cut100.flac": flac[:100],
        "cut8k.flac": flac[:8192],
        "header-only.wav": wav_bytes(data=b""),
        "rate0.wav": wav_bytes(rate=0),
        "rate1.wav": wav_bytes(rate=1),
        "rate-2e31.wav": wav_bytes(rate=2**31 - 1),
        "channels1000.wav": wav_bytes(channels=1000, data=b"\0" * 8000),
        "absurd-length-empty.wav": wav_bytes(data=b"", data_len=0xFFFFFFF0, riff_len=0xFFFFFFF0),
        "absurd-fmt.wav": wav_bytes(bits=16, block=0xFFFF, rate=0xFFFFFFFF),
        "garbage.wav": b"RIFF\xff\xff\xff\xffWAVEfmt \xff\xff\xff\xff" + os.urandom(64),
    }
    out = {}
    for name, data in files.items():
        (d / name).write_bytes(data)
        out[name] = d / name
    return out


def non_utf8_path(d: Path, stem: bytes = b"caf\xe9-\xff", ext: str = ".wav") -> str:
    """A str path (surrogate-escaped, as sys.argv gives it) whose bytes are not UTF-8; the file is valid audio."""
    raw = os.fsencode(str(d)) + b"/" + stem + ext.encode()
    sf.write(raw, tone(4.0), 16000)
    return os.fsdecode(raw)
