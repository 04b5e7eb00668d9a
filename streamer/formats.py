"""File formats for an emotion timeline: writers that observe the timeline's events.

Every writer follows one protocol (`Writer`): ``header(info)`` once, ``event(ev)`` for each window,
segment and alert event (:mod:`streamer.events`, or its wire dict), then ``close(duration=None)``. A writer writes to a
text stream it does not own: ``close()`` flushes it and leaves it open.

``info`` is ``{"source", "duration" (or None until close), "sample_rate",
"model": {"name", "version", "labels"}, "channels": [channel names]}``.

Formats (`FORMATS`):

* ``json``: the ``label -f json`` object of DESIGN.md (a public contract), plus ``"channels"``
  (names by index) and ``"alerts"``; windows and segments keep ``channel_name``. Windows are
  written as they come, so memory holds only segments and alerts.
* ``jsonl``: one object per line with its ``type``: a ``header`` line, then every window, segment
  and alert as produced (flushed at once, so a crash loses nothing before it), then an ``end`` line
  with the duration, which also tells a reader the file is complete.
* ``csv``: one row per window: start, end, channel, channel_name, speech, label, confidence, one
  ``p_<label>`` column per model label, and ``alert`` (names of the rules that fired at that
  window, ``;``-separated).
* ``vtt`` / ``srt``: one cue per segment, text ``"channel_name: label (0.87)"`` (the name is left
  out for a mixed stream, ``"mix"``); silence has no cue. Cues are sorted by start time at close.
* ``audacity``: a label track, ``start<TAB>end<TAB>label`` per segment.
* ``textgrid``: Praat TextGrid, long text format, one IntervalTier per channel named by its
  channel name, intervals covering 0..duration, empty text where there is no segment.

Times are written in seconds rounded to the millisecond, probabilities to 4 decimals.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from typing import Any, Protocol, TextIO, Union, runtime_checkable

from streamer.errors import ProtocolError, UsageError
from streamer.events import Alert, Event, Segment, Window, from_wire

__all__ = [
    "FORMATS",
    "EXTENSIONS",
    "Writer",
    "open_writer",
    "JsonWriter",
    "JsonlWriter",
    "CsvWriter",
    "VttWriter",
    "SrtWriter",
    "AudacityWriter",
    "TextGridWriter",
]

FORMATS = ("json", "jsonl", "csv", "vtt", "srt", "audacity", "textgrid")
EXTENSIONS = {"json": ".json", "jsonl": ".jsonl", "csv": ".csv", "vtt": ".vtt", "srt": ".srt",
              "audacity": ".txt", "textgrid": ".TextGrid"}

# Keys that live only on the wire, never in a file.
_PRIVATE = ("type", "seq")

Row = Union[Window, Segment, Alert]  # the events a file holds


@runtime_checkable
class Writer(Protocol):
    """What every format writer does."""

    def header(self, info: dict[str, Any]) -> None:
        """Called once, before any event."""

    def event(self, ev: Event | Mapping[str, Any]) -> None:
        """One window, segment or alert event (or its wire dict); other types are ignored.

        Raises:
            ValueError: a wire dict that lacks a key its type requires.
        """

    def close(self, duration: float | None = None) -> None:
        """Finish the file; ``duration`` overrides the header's. Safe to call twice."""


def _t(x: Any) -> float | None:
    return None if x is None else round(float(x), 3)


def _p(x: Any) -> float | None:
    return None if x is None else round(float(x), 4)


def _clean(ev: Row) -> dict[str, Any]:
    """An event's row in a file: its wire object without type and seq, numpy scalars made plain, rounded."""
    out: dict[str, Any] = {}
    for k, v in ev.to_wire().items():
        if k in _PRIVATE:
            continue
        if k in ("start", "end"):
            v = _t(v)
        elif k == "confidence":
            v = _p(v)
        elif k == "probs" and v is not None:
            v = {str(lb): _p(p) for lb, p in v.items()}
        elif k == "speech":
            v = bool(v)
        elif k == "channel":
            v = int(v)
        out[k] = v
    return out


def _json_default(o: Any) -> Any:
    # numpy scalars and arrays reach writers from the pipeline; convert without importing numpy.
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=_json_default)


class _Base:
    """Shared state: the header, channel names by index, the latest end time seen."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.info: dict[str, Any] = {"source": None, "duration": None, "sample_rate": None,
                                     "model": {"name": None, "version": None, "labels": []},
                                     "channels": []}
        self.max_end = 0.0
        self.closed = False
        self._names: dict[int, str] = {}

    @property
    def labels(self) -> list[str]:
        return list((self.info.get("model") or {}).get("labels") or [])

    def header(self, info: dict[str, Any]) -> None:
        self.info = {**self.info, **info}
        for i, n in enumerate(self.info.get("channels") or []):
            self._names[i] = str(n)

    def _seen(self, ev: Row) -> None:
        ch = int(ev.channel)
        if ev.channel_name is not None:
            self._names.setdefault(ch, str(ev.channel_name))
        if ev.end is not None:
            self.max_end = max(self.max_end, float(ev.end))

    def channel_name(self, ch: int) -> str:
        return self._names.get(ch, "mix" if ch == 0 and not self._names else f"ch{ch + 1}")

    def duration(self, duration: float | None) -> float:
        """The duration to write: given at close, else the header's, else the latest end."""
        for d in (duration, self.info.get("duration")):
            if d is not None:
                return float(d)
        return self.max_end

    def event(self, ev: Event | Mapping[str, Any]) -> None:
        if isinstance(ev, Window):
            self._seen(ev)
            self.window(ev)
        elif isinstance(ev, Segment):
            self._seen(ev)
            self.segment(ev)
        elif isinstance(ev, Alert):
            self._seen(ev)
            self.alert(ev)
        elif isinstance(ev, Mapping) and ev.get("type") in ("window", "segment", "alert"):
            # an event's wire dict (a recording read back, older callers)
            try:
                event = from_wire(ev)
            except ProtocolError as exc:  # a malformed row is bad data, not a protocol breach
                raise ValueError(str(exc)) from None
            self.event(event)

    def window(self, ev: Window) -> None:
        pass

    def segment(self, ev: Segment) -> None:
        pass

    def alert(self, ev: Alert) -> None:
        pass

    def close(self, duration: float | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        self.finish(duration)
        self.stream.flush()

    def finish(self, duration: float | None) -> None:
        pass


class JsonWriter(_Base):
    """The DESIGN.md ``label -f json`` object, plus ``channels`` and ``alerts``."""

    def __init__(self, stream: TextIO):
        super().__init__(stream)
        self._segments: list[dict[str, Any]] = []
        self._alerts: list[dict[str, Any]] = []
        self._started = False
        self._n_windows = 0

    def _start(self) -> None:
        # Written on the first event (not in header) so a header() called twice stays harmless.
        if self._started:
            return
        self._started = True
        info = self.info
        model = info.get("model") or {}
        w = self.stream.write
        w("{" + f'"source": {_dumps(info.get("source"))}')
        w(f', "sample_rate": {_dumps(info.get("sample_rate"))}')
        w(', "model": ' + _dumps({"name": model.get("name"), "version": model.get("version"),
                                  "labels": list(model.get("labels") or [])}))
        w(', "channels": ' + _dumps([str(c) for c in info.get("channels") or []]))
        w(',\n "windows": [')

    def window(self, ev: Window) -> None:
        self._start()
        self.stream.write(("\n  " if self._n_windows == 0 else ",\n  ") + _dumps(_clean(ev)))
        self._n_windows += 1

    def segment(self, ev: Segment) -> None:
        self._segments.append(_clean(ev))

    def alert(self, ev: Alert) -> None:
        self._alerts.append(_clean(ev))

    def finish(self, duration: float | None) -> None:
        self._start()
        w = self.stream.write
        w("],\n")
        w(' "segments": [' + ",".join("\n  " + _dumps(s) for s in self._segments) + "],\n")
        w(' "alerts": [' + ",".join("\n  " + _dumps(a) for a in self._alerts) + "]")
        # Last, because it may be known only now (order in a JSON object carries no meaning).
        w(f',\n "duration": {_dumps(_t(self.duration(duration)))}')
        w("}\n")


class JsonlWriter(_Base):
    """One JSON object per line, flushed as it is written."""

    def _line(self, obj: dict[str, Any]) -> None:
        self.stream.write(_dumps(obj) + "\n")
        self.stream.flush()

    def header(self, info: dict[str, Any]) -> None:
        super().header(info)
        model = self.info.get("model") or {}
        self._line({"type": "header", "source": self.info.get("source"),
                    "duration": _t(self.info.get("duration")),
                    "sample_rate": self.info.get("sample_rate"),
                    "model": {"name": model.get("name"), "version": model.get("version"),
                              "labels": list(model.get("labels") or [])},
                    "channels": [str(c) for c in self.info.get("channels") or []]})

    def _typed(self, ev: Row) -> None:
        self._line({"type": ev.type, **_clean(ev)})

    window = segment = alert = _typed

    def finish(self, duration: float | None) -> None:
        self._line({"type": "end", "duration": _t(self.duration(duration))})


class CsvWriter(_Base):
    """One row per window; the ``alert`` column names the rules that fired at that window, ``band``
    the prior the window was normalised from (``telephone``/``wideband``; empty for a model without one).

    The timeline may emit a window's alerts just after the window (or just before it), so rows wait
    in a short queue (at most one row per channel) until the next window of the same channel.
    """

    FIXED = ["start", "end", "channel", "channel_name", "speech", "label", "confidence"]

    def __init__(self, stream: TextIO):
        super().__init__(stream)
        self._csv = csv.writer(stream, lineterminator="\n")
        self._wrote_header = False
        self._pending: list[tuple[Window, list[str]]] = []
        self._early: dict[int, list[tuple[float, str]]] = {}  # alerts seen before their window

    def _write_header(self) -> None:
        if not self._wrote_header:
            self._wrote_header = True
            self._csv.writerow(self.FIXED + [f"p_{lb}" for lb in self.labels] + ["alert", "band"])

    def _flush_through(self, idx: int) -> None:
        for ev, alerts in self._pending[: idx + 1]:
            probs = ev.probs or {}
            conf = ev.confidence
            self._csv.writerow([
                _t(ev.start), _t(ev.end), int(ev.channel), ev.channel_name or self.channel_name(int(ev.channel)),
                "true" if ev.speech else "false",
                ev.label or "", "" if conf is None else _p(conf),
                *["" if probs.get(lb) is None else _p(probs[lb]) for lb in self.labels],
                ";".join(alerts), ev.band or "",
            ])
        del self._pending[: idx + 1]

    def window(self, ev: Window) -> None:
        self._write_header()
        ch = int(ev.channel)
        for i, (p, _) in enumerate(self._pending):
            if int(p.channel) == ch:
                self._flush_through(i)  # keeps the order in which windows arrived
                break
        alerts: list[str] = []
        end = float(ev.end)
        early = self._early.get(ch, [])
        alerts += [name for e, name in early if e <= end + 1e-6]
        self._early[ch] = [(e, n) for e, n in early if e > end + 1e-6]
        self._pending.append((ev, alerts))

    def alert(self, ev: Alert) -> None:
        ch = int(ev.channel)
        end = float(ev.end if ev.end is not None else ev.start)
        for p, alerts in reversed(self._pending):
            if int(p.channel) == ch and end <= float(p.end) + 1e-6:
                alerts.append(str(ev.rule))
                return
        self._early.setdefault(ch, []).append((end, str(ev.rule)))

    def finish(self, duration: float | None) -> None:
        self._write_header()
        self._flush_through(len(self._pending) - 1)


def _cue_text(name: str, ev: Segment) -> str:
    conf = ev.confidence
    body = f"{ev.label}" + ("" if conf is None else f" ({float(conf):.2f})")
    return body if name == "mix" else f"{name}: {body}"


class _SegmentWriter(_Base):
    """Collects segments and writes them sorted by start at close (channels interleave)."""

    def __init__(self, stream: TextIO):
        super().__init__(stream)
        self._segs: list[Segment] = []

    def segment(self, ev: Segment) -> None:
        if ev.label is None:  # silence has no cue
            return
        if float(ev.end) - float(ev.start) <= 0:
            return
        self._segs.append(ev)

    def sorted_segments(self) -> list[Segment]:
        return sorted(self._segs, key=lambda s: (float(s.start), int(s.channel)))

    def name_of(self, ev: Segment) -> str:
        return str(ev.channel_name or self.channel_name(int(ev.channel)))


def _clock(t: float, sep: str) -> str:
    ms = int(round(float(t) * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


class VttWriter(_SegmentWriter):
    """WebVTT subtitles, one cue per segment."""

    def finish(self, duration: float | None) -> None:
        w = self.stream.write
        w("WEBVTT\n\n")
        model = self.info.get("model") or {}
        note = f"emostream {model.get('name') or ''} {model.get('version') or ''}".strip()
        if self.info.get("source"):
            note += f": {self.info['source']}"
        w("NOTE " + note.replace("-->", "->").replace("\n", " ") + "\n\n")
        for s in self.sorted_segments():
            w(f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n"
              f"{_cue_text(self.name_of(s), s)}\n\n")


class SrtWriter(_SegmentWriter):
    """SubRip subtitles, one numbered cue per segment."""

    def finish(self, duration: float | None) -> None:
        w = self.stream.write
        for i, s in enumerate(self.sorted_segments(), 1):
            w(f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n"
              f"{_cue_text(self.name_of(s), s)}\n\n")


class AudacityWriter(_SegmentWriter):
    """An Audacity label track: ``start<TAB>end<TAB>label``, seconds with 6 decimals."""

    def finish(self, duration: float | None) -> None:
        for s in self.sorted_segments():
            name = self.name_of(s)
            text = str(s.label) if name == "mix" else f"{name}: {s.label}"
            self.stream.write(f"{float(s.start):.6f}\t{float(s.end):.6f}\t{text}\n")


def _tg_str(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def _tg_num(x: float) -> str:
    return f"{round(float(x), 6):.15g}"


class TextGridWriter(_SegmentWriter):
    """Praat TextGrid (long text format), one IntervalTier per channel."""

    def finish(self, duration: float | None) -> None:
        segs = self.sorted_segments()
        end_all = max([self.duration(duration)] + [float(s.end) for s in segs])
        channels = sorted(set(self._names) | {int(s.channel) for s in segs}) or [0]
        lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "",
                 "xmin = 0 ", f"xmax = {_tg_num(end_all)} ", "tiers? <exists> ",
                 f"size = {len(channels)} ", "item []: "]
        for k, ch in enumerate(channels, 1):
            intervals: list[tuple[float, float, str]] = []
            cursor = 0.0
            for s in segs:
                if int(s.channel) != ch:
                    continue
                a, b = max(float(s.start), cursor), float(s.end)
                a, b = round(a, 6), round(b, 6)
                if b <= a:  # overlapping segments of one channel: the earlier one wins
                    continue
                if a > cursor:
                    intervals.append((cursor, a, ""))
                intervals.append((a, b, str(s.label)))
                cursor = b
            if cursor < end_all or not intervals:
                intervals.append((cursor, end_all, ""))
            lines += [f"    item [{k}]:", '        class = "IntervalTier" ',
                      f"        name = {_tg_str(self.channel_name(ch))} ",
                      "        xmin = 0 ", f"        xmax = {_tg_num(end_all)} ",
                      f"        intervals: size = {len(intervals)} "]
            for j, (a, b, text) in enumerate(intervals, 1):
                lines += [f"        intervals [{j}]:", f"            xmin = {_tg_num(a)} ",
                          f"            xmax = {_tg_num(b)} ", f"            text = {_tg_str(text)} "]
        self.stream.write("\n".join(lines) + "\n")


_WRITERS: dict[str, type[_Base]] = {
    "json": JsonWriter, "jsonl": JsonlWriter, "csv": CsvWriter, "vtt": VttWriter,
    "srt": SrtWriter, "audacity": AudacityWriter, "textgrid": TextGridWriter,
}


def open_writer(fmt: str, stream: TextIO) -> Writer:
    """A writer of format ``fmt`` (one of `FORMATS`) over a text stream it does not close.

    Raises:
        UsageError: an unknown format.
    """
    cls = _WRITERS.get((fmt or "").lower())
    if cls is None:
        raise UsageError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    return cls(stream)
