"""Review clips: the audio of every alert's whole stretch, so a supervisor can listen to the moment
that fired (``emostream label --clips DIR``).

An alert fires once, the moment its stretch becomes long enough; the stretch may go on after that.
A clip covers the whole stretch, from its first window to the end of its last (the same stretch
rules as `streamer.alerts`: the windows are replayed through an `AlertTracker` with the same rules
and spacing, which reproduces the timeline's alerts and follows each stretch to its end), with
`MARGIN_S` of audio either side, clipped to the recording.

Each clip is written to ``DIR/<start>-<end>-<channel name>-<label>.<wav|mp3>``, where start and end
are the clip's own bounds in seconds of the recording (margins included, one decimal), so a time t
in the clip is ``start + t`` in the call. A clip keeps every channel of the recording (the agent's
side is part of the moment). Only the clip's span is read (soundfile seeks; other formats go
through an ffmpeg pipe that starts at the span), never the whole recording: pydub holds just the
short clip in memory and exports it (mp3 through the ffmpeg of ``imageio-ffmpeg``). Files are
written through `streamer.outputs` (temporary name, rename when complete).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from streamer.errors import InputError, UsageError

__all__ = ["MARGIN_S", "CLIP_FORMATS", "Clip", "alert_stretches", "plan_clips", "read_span", "write_clips",
           "check_clips_dir", "window_hop"]

MARGIN_S = 1.0
CLIP_FORMATS = ("wav", "mp3")


@dataclass(frozen=True)
class Clip:
    """One review clip: the span of audio to cut and the alert it belongs to.

    Attributes:
        start, end: the clip's bounds in the recording (margins included, clipped to it).
        stretch_start, stretch_end: the alert's whole stretch.
        channel, channel_name, label, rule: from the alert.
    """

    start: float
    end: float
    stretch_start: float
    stretch_end: float
    channel: int
    channel_name: str
    label: str
    rule: str

    def file_name(self, fmt: str = "wav") -> str:
        """``<start>-<end>-<channel name>-<label>.<fmt>``, safe as one path component."""
        return f"{self.start:.1f}-{self.end:.1f}-{_safe(self.channel_name)}-{_safe(self.label)}.{fmt}"


def _safe(text: str) -> str:
    # channel names come from the command line: keep them readable, never a path separator
    return re.sub(r"[^A-Za-z0-9_.@+-]+", "_", str(text)).strip(".") or "_"


def _as_dict(ev: Any) -> dict[str, Any]:
    """An event as a wire dict (typed events and dicts alike)."""
    if isinstance(ev, dict):
        return ev
    to_wire = getattr(ev, "to_wire", None)
    if to_wire is None:
        raise TypeError(f"not an event: {ev!r}")
    return dict(to_wire())


def window_hop(windows: Sequence[dict[str, Any]]) -> float | None:
    """The windows' spacing: the most common step between two starts of one channel (the last
    window of a file may sit closer, aligned to the end)."""
    from collections import Counter

    last: dict[int, float] = {}
    steps: Counter = Counter()
    for w in windows:
        ch = int(w.get("channel", 0) or 0)
        s = float(w["start"])
        if ch in last and s > last[ch] + 1e-9:
            steps[round(s - last[ch], 3)] += 1
        last[ch] = s
    return steps.most_common(1)[0][0] if steps else None


def alert_stretches(events: Iterable[Any], rules: Sequence[Any], hop_s: float | None = None) -> list[dict[str, Any]]:
    """Every alert of a timeline, with ``end`` moved to the end of its whole stretch.

    Args:
        events: the timeline's events (windows are read, in order; the rest is ignored).
        rules: the alert rules the timeline ran with.
        hop_s: the windows' spacing (None: read from the windows).

    Returns:
        Alert dicts (as the timeline emits them: start, end, channel, channel_name, rule, label)
        in the order they fired, each ``end`` being the last matching window's end.
    """
    from streamer.alerts import AlertTracker

    windows = [w for w in (_as_dict(e) for e in events) if w.get("type", "window") == "window"]
    if not rules or not windows:
        return []
    tracker = AlertTracker(rules, hop_s=hop_s if hop_s is not None else window_hop(windows))
    live: dict[int, dict[str, Any]] = {}   # id of an open, fired stretch -> its alert
    out: list[dict[str, Any]] = []
    for w in windows:
        fired = tracker.update(w)
        # The tracker keeps one open stretch per (rule, channel); a fired one is followed while it
        # stays open, which gives the stretch's end as the tracker itself sees it.
        open_now = {id(st): st for st in tracker._open.values()}  # noqa: SLF001 (read only)
        for a in fired:
            rec = dict(a)
            out.append(rec)
            for st in open_now.values():
                if st.fired and st.start == a["start"] and id(st) not in live:
                    live[id(st)] = rec
                    break
        for key in list(live):
            st = open_now.get(key)
            if st is None:
                del live[key]
            else:
                live[key]["end"] = st.end
    return out


def plan_clips(alerts: Iterable[dict[str, Any]], duration: float | None, margin_s: float = MARGIN_S) -> list[Clip]:
    """The clips of some alerts (whole stretches): margins added, clipped to ``[0, duration]``.

    Two alerts with the same clip (same span, channel and label, different rules) give one clip.
    """
    seen: set[tuple[float, float, int, str]] = set()
    out: list[Clip] = []
    for a in alerts:
        s, e = float(a["start"]), float(a.get("end", a["start"]))
        start = max(0.0, s - margin_s)
        end = e + margin_s if duration is None else min(float(duration), e + margin_s)
        start, end = round(start, 3), round(max(end, start), 3)
        ch = int(a.get("channel", 0) or 0)
        name = str(a.get("channel_name") or ("mix" if ch == 0 else f"ch{ch + 1}"))
        label = str(a.get("label") or "alert")
        key = (round(start, 1), round(end, 1), ch, label)
        if key in seen or end <= start:
            continue
        seen.add(key)
        out.append(Clip(start, end, round(s, 3), round(e, 3), ch, name, label, str(a.get("rule") or "")))
    return out


def _read_soundfile(path: str, start: float, end: float) -> tuple[np.ndarray, int] | None:
    import soundfile as sf

    try:
        with sf.SoundFile(path) as f:
            sr = f.samplerate
            a = min(int(round(start * sr)), f.frames)
            f.seek(a)
            data = f.read(max(0, min(int(round(end * sr)), f.frames) - a), dtype="int16", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None   # not a format libsndfile reads: the ffmpeg pipe does
    return data, sr


def _read_ffmpeg(path: str, start: float, end: float) -> tuple[np.ndarray, int]:
    from streamer.sources import ffmpeg_exe, open_source

    exe = ffmpeg_exe()
    # the recording's own rate and channel count, as the file source probes them

    with open_source(path) as src:
        rate, channels = int(src.sample_rate), int(src.channels)
    cmd = [exe, "-v", "error", "-nostdin", "-ss", f"{start:.3f}", "-t", f"{max(end - start, 0.0):.3f}",
           "-i", path, "-vn", "-f", "s16le", "-acodec", "pcm_s16le", "-ar", str(rate), "-ac", str(channels), "-"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise InputError(f"{path}: cannot cut a clip ({msg[-1] if msg else 'ffmpeg failed'})", path)
    data = np.frombuffer(proc.stdout, dtype="<i2")
    return data[: len(data) // channels * channels].reshape(-1, channels), rate


def read_span(path: str | os.PathLike[str], start: float, end: float) -> Any:
    """The audio of ``[start, end)`` seconds of a recording as a pydub ``AudioSegment`` (16-bit).

    Reads only that span: WAV/FLAC/OGG/AIFF through soundfile (seek, then read), anything else
    through an ffmpeg pipe that seeks before decoding.
    """
    AudioSegment = _audio_segment()
    p = os.fspath(path)
    got = _read_soundfile(p, start, end)
    data, rate = got if got is not None else _read_ffmpeg(p, start, end)
    data = np.ascontiguousarray(data, dtype="<i2")
    return AudioSegment(data=data.tobytes(), sample_width=2, frame_rate=int(rate), channels=int(data.shape[1]))


def _audio_segment() -> Any:
    """pydub's AudioSegment, set to the ffmpeg the package ships (imageio-ffmpeg), not PATH's."""
    import warnings

    with warnings.catch_warnings():
        # pydub warns at import when no ffmpeg is on PATH (the bundled one is set just below) and,
        # on Python 3.11-3.12, that audioop is deprecated: neither is the user's concern
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        from pydub import AudioSegment
    from streamer.sources import ffmpeg_exe

    AudioSegment.converter = ffmpeg_exe()
    return AudioSegment


def check_clips_dir(out_dir: str | os.PathLike[str], recording: str | os.PathLike[str] | None = None) -> None:
    """Refuse a clips directory (or a recording) that cannot work, before any labelling is done.

    Raises:
        UsageError: the recording is standard input (clips are cut from the file afterwards), or
            ``out_dir`` is a file, or neither it nor its nearest existing parent is writable.
    """
    if recording is not None and os.fspath(recording) == "-":
        raise UsageError("--clips cuts the audio out of the recording afterwards: give a file, not - (stdin)")
    d = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(d) and not os.path.isdir(d):
        raise UsageError(f"--clips {out_dir}: not a directory")
    probe = d
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"--clips {out_dir}: {probe} is not a writable directory")


def write_clips(path: str | os.PathLike[str], clips: Sequence[Clip], out_dir: str | os.PathLike[str],
                fmt: str = "wav") -> list[str]:
    """Cut every clip out of the recording at ``path`` and write it to ``out_dir`` (created).

    Returns:
        The paths written, in the order of ``clips``.

    Raises:
        UsageError: an unknown format, or ``out_dir`` exists and is not a directory.
        InputError: the recording cannot be read.
    """
    from streamer.outputs import atomic_path

    if fmt not in CLIP_FORMATS:
        raise UsageError(f"--clips-format must be one of {', '.join(CLIP_FORMATS)}, not {fmt!r}")
    d = os.fspath(out_dir)
    check_clips_dir(d)
    try:
        os.makedirs(d, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--clips {d}: cannot create the directory ({exc.strerror})") from None
    written = []
    for c in clips:
        seg = read_span(path, c.start, c.end)
        target = os.path.join(d, c.file_name(fmt))
        with atomic_path(target, what="--clips") as tmp:
            # pydub writes wav itself; mp3 goes through ffmpeg (libmp3lame), 64 kb/s per channel is
            # plenty for speech
            seg.export(tmp, format=fmt, **({"bitrate": f"{64 * seg.channels}k"} if fmt == "mp3" else {}))
        written.append(target)
    return written
