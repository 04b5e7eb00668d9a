"""Audio sources behind one interface: a file read in blocks, an array, (elsewhere) the microphone.

soundfile (libsndfile) reads WAV (8/16/24/32-bit integer, float, mu-law, A-law), FLAC, OGG and
AIFF in blocks; everything else (MP3, M4A/AAC, MP4/MOV/WebM audio tracks, ...) comes through an
ffmpeg pipe, with the ffmpeg binary that the imageio-ffmpeg package ships, so no system install is
needed. Neither path holds a whole file in memory.

Hostile or broken files are held at the door: a sample rate or channel count outside the supported
range is an :class:`InputError` naming the path; NaN or infinite samples (a corrupt float file) are
read as silence and samples beyond full scale are clipped, each with one warning; a file whose end
is missing (WAV, FLAC, MP3, anything whose container states its length) is labelled as far as it
decodes, with a warning. File names need not be valid UTF-8: the source opens the name as given
and reports it in :attr:`Source.uri` as printable text. ``-`` reads standard input (spooled to a
temporary file, so memory stays bounded and every format works, seekable or not).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO

import numpy as np

from streamer.errors import InputError
from streamer.outputs import display_name

__all__ = ["Source", "SoundFileSource", "FfmpegSource", "ArraySource", "open_source", "load_audio", "ffmpeg_exe",
           "STDIN", "MIN_RATE", "MAX_RATE", "MAX_CHANNELS", "audio_duration", "spool_stdin"]

STDIN = "-"  # the path that means standard input
# What a file may hold (the pipeline's resampler takes the same range; README: "Input").
MIN_RATE, MAX_RATE = 1000, 384000
MAX_CHANNELS = 64

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
        self._frames_seen = 0
        self._noted: set[str] = set()  # kinds of bad samples already warned about
        self._spool: str | None = None  # a temporary copy of standard input, removed on close

    def _sanitise(self, block: np.ndarray) -> np.ndarray:
        """Make a decoded block safe for analysis: non-finite samples -> 0, the rest within [-1, 1].

        One pass over the block in the common case (peak within full scale); a corrupt float file
        gets one warning per kind of problem instead of numpy RuntimeWarnings and NaN features.
        """
        at = self._frames_seen
        self._frames_seen += len(block)
        if block.size == 0:
            return block
        peak = float(np.max(np.abs(block)))
        if peak <= 1.0:  # also False for NaN, which fails every comparison
            return block
        block = np.array(block, dtype=np.float32, copy=True)
        bad = ~np.isfinite(block)
        if bad.any():
            self._note_once("NaN or infinite samples (first at {t:.1f} s) read as silence", bad, at)
            block[bad] = 0.0
        loud = np.abs(block) > 1.0
        if loud.any():
            self._note_once(f"samples beyond full scale (peak {np.max(np.abs(block)):.3g}, first at {{t:.1f}} s) "
                            "clipped to [-1, 1]", loud, at)
            np.clip(block, -1.0, 1.0, out=block)
        return block

    def _note_once(self, text: str, where: np.ndarray, at: int) -> None:
        """One warning per kind of problem, with the time of its first sample (``{t}`` in ``text``)."""
        kind = text.split(" ", 1)[0]
        if kind in self._noted:
            return
        self._noted.add(kind)
        first = at + int(np.argmax(where.any(axis=1)))
        self.warnings.append(f"{self.uri}: " + text.format(t=first / max(1, self.sample_rate)))

    def _release_spool(self) -> None:
        if self._spool is not None:
            try:
                os.unlink(self._spool)
            except OSError:
                pass
            self._spool = None

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
        return self._sanitise(out)


class SoundFileSource(Source):
    """A file libsndfile can read, decoded block by block."""

    def __init__(self, path: str, name: str | None = None):
        super().__init__()
        import soundfile as sf

        self.uri = name if name is not None else display_name(path)
        try:
            # bytes: soundfile encodes a str name strictly, which fails for non-UTF-8 names
            self._f = sf.SoundFile(os.fsencode(path))
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            # libsndfile's text starts "Error opening b'PATH': "; the path is said once, as text
            why = re.sub(r"^Error opening .*?: ", "", _first_line(exc))
            raise InputError(f"{self.uri}: cannot decode: {why}", self.uri) from None
        self.sample_rate = int(self._f.samplerate)
        self.channels = int(self._f.channels)
        frames = self._f.frames
        self.duration = frames / self.sample_rate if frames and frames > 0 and self.sample_rate > 0 else None
        self._done = False
        self._read_frames = 0
        if self._f.format in ("WAV", "WAVEX"):
            missing = _wav_missing_bytes(path)
            if missing > 0:
                # libsndfile quietly shortens a WAV whose data chunk is cut off; say so
                self.warnings.append(f"{self.uri}: file is cut off ({missing} bytes of audio missing, "
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
                if self._read_frames + n == 0:
                    raise InputError(f"{self.uri}: no audio could be decoded ({_first_line(exc)})",
                                     self.uri) from None
                at = (self._read_frames + n) / self.sample_rate
                self.warnings.append(f"{self.uri}: decoding stopped at {at:.1f} s ({_first_line(exc)}); "
                                     "labelled what decoded")
                break
            n += len(got)
            if len(got) < want:
                self._done = True
                break
        self._read_frames += n
        if self._done and self._read_frames == 0:
            detail = "; ".join(w.split(": ", 1)[-1] for w in self.warnings) or "it holds no samples"
            raise InputError(f"{self.uri}: no audio could be decoded ({detail})", self.uri)
        if self._done and self.duration and self._read_frames < self.duration * self.sample_rate - 1 \
                and not self.warnings:
            self.warnings.append(
                f"{self.uri}: file is cut off at {self._read_frames / self.sample_rate:.1f} s "
                f"of {self.duration:.1f} s; labelled what decoded")
        return self._sanitise(out[:n])

    def close(self) -> None:
        self._f.close()
        self._release_spool()


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


def _probe(path: str, name: str) -> tuple[int, int, float | None]:
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", path],
                          capture_output=True, text=True, errors="replace", timeout=60)
    info = proc.stderr
    m = re.search(r"Stream #\d+:\d+.*?: Audio: ([^\n]*)", info)
    if not m:
        if re.search(r"Stream #\d+:\d+.*?: (Video|Data|Subtitle)", info):
            raise InputError(f"{name}: has no audio stream", name)
        raise InputError(f"{name}: not a recognised audio or video file", name)
    desc = m.group(1)
    sr = re.search(r"(\d+) Hz", desc)
    if not sr:
        raise InputError(f"{name}: audio stream has no sample rate", name)
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

    def __init__(self, path: str, name: str | None = None, refused: str | None = None):
        super().__init__()
        self.uri = name if name is not None else display_name(path)
        self._refused = refused  # why libsndfile refused the file, when ffmpeg is the second try
        self.sample_rate, self.channels, self.duration = _probe(path, self.uri)
        _check_format(self)
        # an MP3 whose last frame is cut short decodes without a word from ffmpeg: look ourselves
        self._cut_bytes = _mp3_cut_bytes(path) if _is_mp3(path) else 0
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
        return self._sanitise(out)

    def _finish(self) -> None:
        self._done = True
        rc = self._proc.wait()
        self._err_thread.join(timeout=5)
        msg = b"".join(self._err).decode("utf-8", "replace").strip().splitlines()
        if self._frames == 0:
            if self._refused is not None:  # ffmpeg's own complaint would be about its output, not the file
                raise InputError(f"{self.uri}: not a readable audio file (corrupt or unsupported format: "
                                 f"{self._refused})", self.uri)
            raise InputError(f"{self.uri}: no audio could be decoded" + (f" ({msg[-1]})" if msg else ""), self.uri)
        got = self._frames / self.sample_rate
        if rc != 0 or msg:
            self.warnings.append(f"{self.uri}: decoding stopped at {got:.1f} s"
                                 + (f" ({msg[-1]})" if msg else "") + "; labelled what decoded")
        elif self.duration and got < self.duration - max(0.5, 0.02 * self.duration):
            self.warnings.append(f"{self.uri}: file is cut off at {got:.1f} s of {self.duration:.1f} s; "
                                 "labelled what decoded")
        elif self._cut_bytes:
            self.warnings.append(f"{self.uri}: file is cut off ({self._cut_bytes} bytes of its last MP3 "
                                 f"frame missing, {got:.1f} s decoded); labelled what decoded")

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        for s in (self._proc.stdout, self._proc.stderr):
            if s:
                s.close()
        self._release_spool()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _is_mp3(path: str) -> bool:
    if Path(path).suffix.lower() == ".mp3":
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(3)
    except OSError:
        return False
    return head == b"ID3"


# MPEG audio frame lengths: bitrates (kb/s) by [version is MPEG-1][layer index], rates by version
_MP3_BITRATES = {
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),      # layer III
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),     # layer II
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),  # layer I
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_frame_len(h: bytes) -> int:
    """Length in bytes of the MPEG audio frame whose 4-byte header is ``h`` (0: not a header)."""
    if len(h) < 4 or h[0] != 0xFF or (h[1] & 0xE0) != 0xE0:
        return 0
    version, layer = (h[1] >> 3) & 3, 4 - ((h[1] >> 1) & 3)
    br_i, sr_i, pad = h[2] >> 4, (h[2] >> 2) & 3, (h[2] >> 1) & 1
    if version == 1 or layer == 4 or br_i in (0, 15) or sr_i == 3:
        return 0
    kbps = _MP3_BITRATES[(version == 3, layer)][br_i]
    rate = _MP3_RATES[version][sr_i]
    if layer == 1:
        return (12 * kbps * 1000 // rate + pad) * 4
    per = 144 if layer == 2 or version == 3 else 72
    return per * kbps * 1000 // rate + pad


def _mp3_cut_bytes(path: str, max_frames: int = 2_000_000) -> int:
    """Bytes missing from the last frame of an MP3 file (0 if complete or not walkable).

    Walks the frame headers from the first one after any ID3v2 tag, reading the file in 1 MiB
    blocks (so memory stays small); stops quietly at anything that is not a frame header, since a
    damaged middle is ffmpeg's to report.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(10)
            pos = 0
            if head[:3] == b"ID3" and len(head) == 10:
                pos = 10 + ((head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F))
            end = size
            fh.seek(max(0, size - 128))
            if fh.read(3) == b"TAG":  # ID3v1 tag at the very end
                end -= 128
            fh.seek(pos)
            block, base = fh.read(1 << 20), pos
            for _ in range(max_frames):
                if pos + 4 > end:
                    return 0
                off = pos - base
                if off + 4 > len(block):
                    fh.seek(pos)
                    block, base, off = fh.read(1 << 20), pos, 0
                n = _mp3_frame_len(block[off : off + 4])
                if n == 0:
                    return 0
                if pos + n > end:
                    return pos + n - end
                pos += n
    except (OSError, struct.error):
        return 0
    return 0


def _check_format(src: Source) -> None:
    """Refuse a sample rate or channel count the pipeline cannot take (an input problem: exit 2)."""
    if not MIN_RATE <= src.sample_rate <= MAX_RATE:
        raise InputError(f"{src.uri}: unsupported sample rate {src.sample_rate} Hz "
                         f"(supported: {MIN_RATE} to {MAX_RATE})", src.uri)
    if not 1 <= src.channels <= MAX_CHANNELS:
        raise InputError(f"{src.uri}: unsupported channel count {src.channels} "
                         f"(supported: 1 to {MAX_CHANNELS})", src.uri)


def check_path(path: str) -> None:
    """Raise InputError for a path that is missing, a directory, unreadable or empty."""
    name = display_name(path)
    p = Path(path)
    if not p.exists():
        raise InputError(f"{name}: no such file", name)
    if p.is_dir():
        raise InputError(f"{name}: is a directory, not an audio file", name)
    if not os.access(p, os.R_OK):
        raise InputError(f"{name}: permission denied", name)
    if p.stat().st_size == 0:
        raise InputError(f"{name}: file is empty", name)


def spool_stdin(stream: BinaryIO | None = None) -> str:
    """Copy standard input to a temporary file (in $TMPDIR) and return its path; the caller removes it.

    Disk, not memory, holds the recording, so any length and any format works, including those a
    decoder must seek in (WAV headers written last, MP4 with its index at the end).

    Raises:
        InputError: standard input is a terminal, or holds nothing.
    """
    if stream is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise InputError("-: standard input is a terminal; pipe audio in (e.g. ffmpeg ... -f wav - | "
                             "emostream label -)", STDIN)
        stream = sys.stdin.buffer
    fd, path = tempfile.mkstemp(prefix="emostream-stdin-")
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(stream, out, 1 << 20)
        if os.path.getsize(path) == 0:
            raise InputError("-: standard input is empty", STDIN)
    except BaseException:
        os.unlink(path)
        raise
    return path


def _open_file(path: str, name: str) -> Source:
    ext = Path(path).suffix.lower()
    sf_error: InputError | None = None
    if ext in _SOUNDFILE_EXT or ext == "":
        try:
            src: Source = SoundFileSource(path, name)
        except InputError as exc:
            sf_error = exc
        else:
            try:
                _check_format(src)
            except InputError:
                src.close()
                raise
            return src
    try:
        return FfmpegSource(path, name, refused=None if sf_error is None else str(sf_error).split(": ", 2)[-1])
    except InputError:
        if sf_error is not None:
            raise InputError(f"{name}: not a readable audio file (corrupt or unsupported format)", name) from None
        raise


def open_source(path: str | os.PathLike[str]) -> Source:
    """Open an audio (or video) file as a block source, choosing the decoder by what it holds.

    ``-`` reads standard input (see :func:`spool_stdin`); its ``uri`` is ``-``.

    Raises:
        InputError: missing, unreadable, empty, corrupt or unsupported (rate, channels) input.
    """
    path = os.fspath(path)
    if path == STDIN:
        spool = spool_stdin()
        try:
            src = _open_file(spool, STDIN)
        except BaseException:
            os.unlink(spool)
            raise
        src._spool = spool
        return src
    check_path(path)
    return _open_file(path, display_name(path))


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


def audio_duration(path: str | os.PathLike[str], limit_s: float | None = None) -> float:
    """Seconds of audio in a file: the stated length, else decoded (stopping soon after ``limit_s``).

    For a cap checked before any work (the server's ``--max-upload-seconds``): a file that states
    its length costs an open; one that does not (a stream, a FLAC without a sample count) is
    decoded, but never much past the limit.

    Raises:
        InputError: the file cannot be opened or decoded.
    """
    with open_source(path) as src:
        if src.duration is not None:
            return src.duration
        cap = None if limit_s is None else int((limit_s + 1) * src.sample_rate)
        n = 0
        while cap is None or n <= cap:
            block = src.read(1 << 16)
            if len(block) == 0:
                break
            n += len(block)
        return n / src.sample_rate
