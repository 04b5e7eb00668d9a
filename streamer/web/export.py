"""The page's download buttons: a labelled upload (the ``label -f json`` object the page already
holds) rendered in any export format by the same writers as ``emostream label -f FORMAT``.

The server answers ``POST /render?format=FMT`` (body: that JSON object) with `render_result`; the
page never formats anything itself. The events are replayed in the order the pipeline produced
them as far as a writer can tell: windows in their order, each alert right after the window of its
channel that made it fire, segments in their order; so json, csv, vtt, srt, audacity and textgrid
come out byte for byte as ``label`` writes them, and jsonl has the same lines (segments after the
windows instead of interleaved).
"""

from __future__ import annotations

import io
import math
from typing import Any

from streamer.errors import InputError

__all__ = ["CONTENT_TYPES", "render_result", "download_name"]

CONTENT_TYPES = {"json": "application/json", "jsonl": "application/x-ndjson", "csv": "text/csv",
                 "vtt": "text/vtt", "srt": "application/x-subrip", "audacity": "text/plain",
                 "textgrid": "text/plain"}


def _events(result: dict[str, Any]) -> list[dict[str, Any]]:
    windows = result.get("windows") or []
    alerts = list(result.get("alerts") or [])
    segments = result.get("segments") or []
    for name, seq in (("windows", windows), ("segments", segments), ("alerts", alerts)):
        if not isinstance(seq, list) or not all(isinstance(e, dict) for e in seq):
            raise InputError(f"{name} must be a list of objects")
    from streamer.clips import window_hop

    hop = window_hop(windows)
    out: list[dict[str, Any]] = []
    pending = sorted(range(len(alerts)), key=lambda i: float(alerts[i].get("end", alerts[i].get("start", 0)) or 0))
    for w in windows:
        out.append({"type": "window", **w})
        ch, end = w.get("channel", 0), float(w.get("end", 0) or 0)
        if hop is not None:   # the span the window stands for: the hop at its centre
            end = min(end, (float(w.get("start", 0) or 0) + end + hop) / 2)
        for i in list(pending):
            a = alerts[i]
            # the window that made it fire: the first of its channel whose span reaches the alert's end
            if a.get("channel", 0) == ch and float(a.get("end", a.get("start", 0)) or 0) <= end + 1e-6:
                out.append({"type": "alert", **a})
                pending.remove(i)
    out += [{"type": "alert", **alerts[i]} for i in sorted(pending)]
    out += [{"type": "segment", **s} for s in segments]
    return out


def render_result(result: dict[str, Any], fmt: str) -> str:
    """A ``label -f json`` object in format ``fmt`` (one of `streamer.formats.FORMATS`).

    Raises:
        UsageError: an unknown format.
        InputError: not a label result (no windows list, a bad duration, ...).
    """
    from streamer.formats import open_writer

    if not isinstance(result, dict) or not isinstance(result.get("windows"), list):
        raise InputError("not a label result: expected the label -f json object")
    duration = result.get("duration")
    if duration is not None and not (isinstance(duration, (int, float)) and math.isfinite(duration) and duration >= 0):
        raise InputError("duration must be a number of seconds")
    buf = io.StringIO()
    writer = open_writer(fmt, buf)
    writer.header({"source": result.get("source"), "duration": duration,
                   "sample_rate": result.get("sample_rate"), "model": result.get("model") or {},
                   "channels": list(result.get("channels") or [])})
    try:
        for ev in _events(result):
            writer.event(ev)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"not a label result: {exc}") from None
    writer.close(duration=duration)
    return buf.getvalue()


def download_name(source: str | None, fmt: str) -> str:
    """``call.vtt`` for ``/x/call.wav``: the recording's name with the format's extension."""
    from streamer.formats import EXTENSIONS

    base = str(source or "timeline").replace("\\", "/").rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base.strip(".") else base
    safe = "".join(c if c.isalnum() or c in "-_. " else "_" for c in stem).strip() or "timeline"
    return safe + EXTENSIONS.get(fmt, "." + fmt)
