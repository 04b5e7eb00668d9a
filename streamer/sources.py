"""Audio sources behind one interface: a file read in blocks, an array, (elsewhere) the microphone.

soundfile (libsndfile) reads WAV (8/16/24/32-bit integer, float, mu-law, A-law), FLAC, OGG and
AIFF in blocks; everything else (MP3, M4A/AAC, MP4/MOV/WebM audio tracks, ...) comes through an
ffmpeg pipe, with the ffmpeg binary that the imageio-ffmpeg package ships, so no system install is
needed. Neither path holds a whole file in memory.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from pathlib import Path

import numpy as np

from streamer.errors import InputError

__all__ = ["Source", "SoundFileSource", "FfmpegSource", "ArraySource", "open_source", "load_audio", "ffmpeg_exe"]

_SOUNDFILE_EXT = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au", ".caf", ".w64", ".rf64"}
_LAYOUTS = {"mono": 1, "stereo": 2, "2.1": 3, "3.0": 3, "quad": 4, "4.0": 4, "5.0": 5, "5.1": 6,
            "6.1": 7, "7.1": 8}


class Source:
    """An audio source: ``read()`` float32 blocks ``[n, channels]`` until it returns an empty one.

    Attributes:
        sample_rate: samples per second per channel.
        channels: channel count.
        uri: where the audio comes from (a path, ``mic:NAME``, ``ingest:ID``).
        duration: seconds, when known in advance (None for live sources).
        live: True when the source cannot run faster than real time.
        warnings: problems met while reading that did not stop it (e.g. a truncated file).
    """

    sample_rate: int = 0
    channels: int = 0
    uri: str = ""
    duration: float | None = None
    live: bool = False

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def read(self, max_frames: int) -> np.ndarray:
        """Up to ``max_frames`` samples as float32 [n, channels]; empty at the end."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the source; safe to call twice."""

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ArraySource(Source):
    """An in-memory signal as a source (tests, uploads already decoded)."""

    def __init__(self, y: np.ndarray, sample_rate: int, uri: str = "array"):
        super().__init__()
        y = np.asarray(y, dtype=np.float32)
        self._y = y[:, None] if y.ndim == 1 else y
        self.sample_rate = int(sample_rate)
        self.channels = self._y.shape[1]
        self.uri = uri
        self.duration = len(self._y) / self.sample_rate
        self._pos = 0

    def read(self, max_frames: int) -> np.ndarray:
        out = self._y[self._pos : self._pos + max_frames]
        self._pos += len(out)
        return out


class SoundFileSource(Source):
    """A file libsndfile can read, decoded block by block."""

    def __init__(self, path: str):
        super().__init__()
        import soundfile as sf

        try:
            self._f = sf.SoundFile(path)
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise InputError(f"{path}: cannot decode: {_first_line(exc)}", path) from None
        self.sample_rate = int(self._f.samplerate)
        self.channels = int(self._f.channels)
        self.uri = str(path)
        frames = self._f.frames
        self.duration = frames / self.sample_rate if frames and frames > 0 else None
        self._done = False
        self._read_frames = 0
        if self._f.format in ("WAV", "WAVEX"):
            missing = _wav_missing_bytes(path)
            if missing > 0:
                # libsndfile quietly shortens a WAV whose data chunk is cut off; say so
                self.warnings.append(f"{path}: file is cut off ({missing} bytes of audio missing, "
                                     f"{self.duration or 0:.1f} s left); labelled what decoded")

    _STEP = 16384  # frames per libsndfile call: a corrupt frame then costs at most this much audio

    def read(self, max_frames: int) -> np.ndarray:
        if self._done:
            return np.zeros((0, self.channels), np.float32)
        out = np.empty((max_frames, self.channels), dtype=np.float32)
        n = 0
        while n < max_frames:
            want = min(self._STEP, max_frames - n)
            try:
                got = self._f.read(want, dtype="float32", always_2d=True, out=out[n : n + want])
            except Exception as exc:  # libsndfile raises plain RuntimeErrors mid-stream on corrupt data
                self._done = True
                at = (self._read_frames + n) / self.sample_rate
                self.warnings.append(f"{self.uri}: decoding stopped at {at:.1f} s ({_first_line(exc)}); "
                                     "labelled what decoded")
                break
            n += len(got)
            if len(got) < want:
                self._done = True
                break
        self._read_frames += n
        if self._done and self.duration and self._read_frames < self.duration * self.sample_rate - 1 \
                and not self.warnings:
            self.warnings.append(
                f"{self.uri}: file is cut off at {self._read_frames / self.sample_rate:.1f} s "
                f"of {self.duration:.1f} s; labelled what decoded")
        return out[:n]

    def close(self) -> None:
        self._f.close()


def _wav_missing_bytes(path: str) -> int:
    """Bytes the WAV header's data chunk promises beyond the end of the file (0 if none)."""
    import struct

    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
                return 0
            fmt = "<I" if head[:4] == b"RIFF" else ">I"
            pos = 12
            while pos + 8 <= size:
                fh.seek(pos)
                cid, n = fh.read(4), struct.unpack(fmt, fh.read(4))[0]
                if cid == b"data":
                    return max(0, pos + 8 + n - size) if n != 0xFFFFFFFF else 0
                pos += 8 + n + (n & 1)
    except (OSError, struct.error):
        return 0
    return 0


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary (imageio-ffmpeg's, or $IMAGEIO_FFMPEG_EXE)."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        raise InputError(f"ffmpeg is not available ({_first_line(exc)}): pip install imageio-ffmpeg") from None


def _probe(path: str) -> tuple[int, int, float | None]:
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", path],
                          capture_output=True, text=True, errors="replace", timeout=60)
    info = proc.stderr
    m = re.search(r"Stream #\d+:\d+.*?: Audio: ([^\n]*)", info)
    if not m:
        if re.search(r"Stream #\d+:\d+.*?: (Video|Data|Subtitle)", info):
            raise InputError(f"{path}: has no audio stream", path)
        raise InputError(f"{path}: not a recognised audio or video file", path)
    desc = m.group(1)
    sr = re.search(r"(\d+) Hz", desc)
    if not sr:
        raise InputError(f"{path}: audio stream has no sample rate", path)
    parts = [p.strip() for p in desc.split(",")]
    ch = 0
    for p in parts:
        key = p.split("(")[0].strip()
        if key in _LAYOUTS:
            ch = _LAYOUTS[key]
            break
        mc = re.match(r"(\d+) channels", p)
        if mc:
            ch = int(mc.group(1))
            break
    dur = None
    md = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", info)
    if md:
        dur = int(md.group(1)) * 3600 + int(md.group(2)) * 60 + float(md.group(3))
    return int(sr.group(1)), ch or 2, dur


class FfmpegSource(Source):
    """Any format ffmpeg decodes, as float32 through a pipe, in blocks (first audio stream)."""

    def __init__(self, path: str):
        super().__init__()
        self.uri = str(path)
        self.sample_rate, self.channels, self.duration = _probe(path)
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", path, "-map", "0:a:0",
               "-vn", "-ac", str(self.channels), "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self._err: list[bytes] = []
        # drain stderr in the background so a chatty decoder never blocks on a full pipe
        self._err_thread = threading.Thread(target=self._drain, daemon=True)
        self._err_thread.start()
        self._frame_bytes = 4 * self.channels
        self._pending = b""
        self._frames = 0
        self._done = False

    def _drain(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            if len(self._err) < 50:
                self._err.append(line)

    def read(self, max_frames: int) -> np.ndarray:
        if self._done:
            return np.zeros((0, self.channels), np.float32)
        assert self._proc.stdout is not None
        want = max_frames * self._frame_bytes - len(self._pending)
        data = self._pending + (self._proc.stdout.read(want) if want > 0 else b"")
        usable = len(data) // self._frame_bytes * self._frame_bytes
        self._pending = data[usable:]
        if usable == 0:
            self._finish()
            return np.zeros((0, self.channels), np.float32)
        out = np.frombuffer(data[:usable], dtype="<f4").reshape(-1, self.channels)
        self._frames += len(out)
        return out

    def _finish(self) -> None:
        self._done = True
        rc = self._proc.wait()
        self._err_thread.join(timeout=5)
        msg = b"".join(self._err).decode("utf-8", "replace").strip().splitlines()
        if self._frames == 0:
            raise InputError(f"{self.uri}: no audio could be decoded" + (f" ({msg[-1]})" if msg else ""), self.uri)
        if rc != 0 or msg:
            self.warnings.append(f"{self.uri}: decoding stopped at {self._frames / self.sample_rate:.1f} s"
                                 + (f" ({msg[-1]})" if msg else "") + "; labelled what decoded")

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        for s in (self._proc.stdout, self._proc.stderr):
            if s:
                s.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def check_path(path: str) -> None:
    """Raise InputError for a path that is missing, a directory, unreadable or empty."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file", path)
    if p.is_dir():
        raise InputError(f"{path}: is a directory, not an audio file", path)
    if not os.access(p, os.R_OK):
        raise InputError(f"{path}: permission denied", path)
    if p.stat().st_size == 0:
        raise InputError(f"{path}: file is empty", path)


def open_source(path: str | os.PathLike[str]) -> Source:
    """Open an audio (or video) file as a block source, choosing the decoder by what it holds."""
    path = str(path)
    check_path(path)
    ext = Path(path).suffix.lower()
    sf_error: InputError | None = None
    if ext in _SOUNDFILE_EXT or ext == "":
        try:
            return SoundFileSource(path)
        except InputError as exc:
            sf_error = exc
    try:
        return FfmpegSource(path)
    except InputError:
        if sf_error is not None:
            raise InputError(f"{path}: not a readable audio file (corrupt or unsupported format)", path) from None
        raise


def load_audio(path: str | os.PathLike[str], sample_rate: int | None = None, mono: bool = True) -> tuple[np.ndarray, int]:
    """Decode a whole (short) file: float32 [n] if mono else [n, ch], resampled with soxr if asked."""
    with open_source(path) as src:
        blocks = []
        while True:
            b = src.read(1 << 18)
            if len(b) == 0:
                break
            blocks.append(b)
        sr = src.sample_rate
        y = np.concatenate(blocks) if blocks else np.zeros((0, src.channels), np.float32)
    if mono:
        y = y.mean(axis=1)
    if sample_rate and sample_rate != sr and len(y):
        import soxr

        y = soxr.resample(y, sr, sample_rate, quality="HQ").astype(np.float32)
        sr = sample_rate
    return y, sr
