"""End-of-call summary per channel: time per emotion, speech and silence, the longest negative
stretch, the alerts raised, the dominant emotion.

Times come from segment events (windows overlap, segments do not), so a channel's seconds per
emotion add up to its speech seconds. A segment without a label counts as silence.

The result of `summarise` / `Summary.result`::

    {"duration": s,
     "silence_s": s,                                   # nobody speaking (no channel has a segment)
     "overlap_s": s,                                   # two or more channels speaking at once
     "channels": [{"channel": i, "channel_name": n,
                   "speech_s": s, "silence_s": s,
                   "emotions": {label: s},            # every label seen, in first-seen order
                   "share": {label: fraction of speech},
                   "dominant": label | None,          # most seconds; None without speech
                   "longest_negative": {"start", "end", "seconds", "label"} | None,
                   "alerts": [{"rule", "start", "end", "label"}],
                   "trend": [{"start", "end", "dominant", "negative_share"}] * TREND_SLICES,
                   "band": "telephone" | "wideband"}]}            # the last window's; only with a model
                                                      # that has a narrowband prior

The trend cuts the call into `TREND_SLICES` equal slices; in each, ``dominant`` is the emotion with
the most seconds (None without speech) and ``negative_share`` the negative emotions' share of the
slice's speech time (None without speech).

A negative stretch is a run of segments whose labels are all negative (`NEGATIVE_LABELS` by
default), allowing silences of up to ``max_gap_s`` between them, as alert rules do; any other
emotion ends it. Its ``seconds`` is end minus start, short silences included; its ``label`` is the
negative emotion with the most seconds inside it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from streamer.alerts import DEFAULT_MAX_GAP_S

__all__ = ["NEGATIVE_LABELS", "TREND_SLICES", "Summary", "summarise"]

NEGATIVE_LABELS = frozenset({"angry", "fearful", "sad", "disgust"})
TREND_SLICES = 10


def _r(x: float) -> float:
    return round(float(x), 3)


@dataclass
class _Channel:
    name: str | None = None
    emotions: Counter = field(default_factory=Counter)
    speech: float = 0.0
    last_end: float = 0.0  # clips overlapping segments so nothing is counted twice
    run: dict[str, Any] | None = None  # the open negative stretch
    longest: dict[str, Any] | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)
    # (start, end, label) of every counted segment piece, for the trend, silence and overlap: a few
    # per minute of speech, so this stays small even for hours
    spans: list[tuple[float, float, str]] = field(default_factory=list)
    band: str | None = None  # the latest window's band (telephone / wideband), if it says


class Summary:
    """Accumulates a summary from events as they come (an observer of the timeline).

    Memory is one small record per channel. Segments of a channel must arrive in time order (the
    timeline emits them so); `summarise` sorts a finished list first.
    """

    def __init__(self, channels: Iterable[str] | None = None,
                 negative: Iterable[str] = NEGATIVE_LABELS, max_gap_s: float = DEFAULT_MAX_GAP_S):
        self.negative = frozenset(negative)
        self.max_gap_s = float(max_gap_s)
        self._ch: dict[int, _Channel] = {}
        self._max_end = 0.0
        self._duration: float | None = None
        if channels is not None:
            for i, n in enumerate(channels):
                self._ch[i] = _Channel(name=str(n))

    def header(self, info: dict[str, Any]) -> None:
        """Takes channel names and the duration (if known) from a writer-style header."""
        for i, n in enumerate(info.get("channels") or []):
            self._ch.setdefault(i, _Channel()).name = str(n)
        if info.get("duration") is not None:
            self._duration = float(info["duration"])

    def _get(self, ev: dict[str, Any]) -> _Channel:
        ch = int(ev.get("channel", 0) or 0)
        c = self._ch.setdefault(ch, _Channel())
        if c.name is None and ev.get("channel_name") is not None:
            c.name = str(ev["channel_name"])
        return c

    def event(self, ev: dict[str, Any]) -> None:
        """Observe one event; windows only register their channel and the time reached."""
        kind = ev.get("type")
        if kind not in ("window", "segment", "alert"):
            return
        c = self._get(ev)
        if ev.get("end") is not None:
            self._max_end = max(self._max_end, float(ev["end"]))
        if kind == "window" and ev.get("band"):
            c.band = str(ev["band"])
        if kind == "segment":
            self._segment(c, ev)
        elif kind == "alert":
            c.alerts.append({"rule": ev.get("rule"), "start": _r(ev["start"]),
                             "end": _r(ev.get("end", ev["start"])), "label": ev.get("label")})

    add = event  # the name a plain observer list might use

    def _segment(self, c: _Channel, ev: dict[str, Any]) -> None:
        label = ev.get("label")
        start, end = max(float(ev["start"]), c.last_end), float(ev["end"])
        if end <= start or label is None:
            c.last_end = max(c.last_end, end)
            return
        c.last_end = end
        c.spans.append((start, end, label))
        c.emotions[label] += end - start
        c.speech += end - start
        if label not in self.negative:
            c.run = None
            return
        run = c.run
        if run is None or start - run["end"] > self.max_gap_s:
            run = c.run = {"start": start, "end": end, "labels": Counter()}
        run["end"] = end
        run["labels"][label] += end - start
        seconds = run["end"] - run["start"]
        if c.longest is None or seconds > c.longest["seconds"] + 1e-9:
            c.longest = {"start": _r(run["start"]), "end": _r(run["end"]), "seconds": _r(seconds),
                         "label": run["labels"].most_common(1)[0][0]}

    def result(self, duration: float | None = None) -> dict[str, Any]:
        """The summary so far; ``duration`` defaults to the header's, else the latest end seen."""
        d = duration if duration is not None else self._duration
        d = float(d) if d is not None else self._max_end
        out = []
        for ch in sorted(self._ch):
            c = self._ch[ch]
            speech = c.speech
            emotions = {lb: _r(s) for lb, s in c.emotions.items()}
            out.append({
                "channel": ch,
                "channel_name": c.name if c.name is not None else ("mix" if ch == 0 else f"ch{ch + 1}"),
                "speech_s": _r(speech),
                "silence_s": _r(max(0.0, d - speech)),
                "emotions": emotions,
                "share": {lb: round(s / speech, 4) for lb, s in c.emotions.items()} if speech else {},
                # max() keeps the first of equals, i.e. the emotion heard first.
                "dominant": max(c.emotions, key=c.emotions.__getitem__) if c.emotions else None,
                "longest_negative": dict(c.longest) if c.longest else None,
                "alerts": list(c.alerts),
                "trend": self._trend(c.spans, d),
                **({"band": c.band} if c.band else {}),
            })
        silence, overlap = _silence_overlap([c.spans for c in self._ch.values()], d)
        return {"duration": _r(d), "silence_s": _r(silence), "overlap_s": _r(overlap), "channels": out}

    def _trend(self, spans: list[tuple[float, float, str]], d: float) -> list[dict[str, Any]]:
        """The call in `TREND_SLICES` equal slices: dominant emotion and negative share of each."""
        step = d / TREND_SLICES
        slices: list[Counter] = [Counter() for _ in range(TREND_SLICES)]
        for a, b, label in spans:
            if step <= 0:
                break
            k = min(int(a / step), TREND_SLICES - 1)
            while k < TREND_SLICES and a < b:
                cut = b if k == TREND_SLICES - 1 else min(b, (k + 1) * step)
                if cut > a:
                    slices[k][label] += cut - a
                a = cut
                k += 1
        out = []
        for k, cnt in enumerate(slices):
            speech = sum(cnt.values())
            neg = sum(v for lb, v in cnt.items() if lb in self.negative)
            out.append({"start": _r(k * step), "end": _r((k + 1) * step),
                        "dominant": max(cnt, key=cnt.__getitem__) if speech > 1e-9 else None,
                        "negative_share": round(neg / speech, 4) if speech > 1e-9 else None})
        return out


def _silence_overlap(channels: list[list[tuple[float, float, str]]], d: float) -> tuple[float, float]:
    """Seconds of ``[0, d]`` where no channel speaks, and where two or more speak at once."""
    edges: list[tuple[float, int]] = []
    for spans in channels:
        for a, b, _ in spans:
            a, b = max(0.0, a), min(d, b)
            if b > a:
                edges += [(a, 1), (b, -1)]
    edges.sort()
    covered = overlap = 0.0
    level, prev = 0, 0.0
    for t, step in edges:
        if level >= 1:
            covered += t - prev
        if level >= 2:
            overlap += t - prev
        level += step
        prev = t
    return max(0.0, d - covered), overlap


def summarise(events: Iterable[dict[str, Any]], duration: float | None,
              channels: Iterable[str] | None = None, negative: Iterable[str] = NEGATIVE_LABELS,
              max_gap_s: float = DEFAULT_MAX_GAP_S) -> dict[str, Any]:
    """The summary of a finished list of events (any order).

    Args:
        events: window, segment and alert event dicts; others are ignored.
        duration: the recording's length in seconds (None: the latest end seen).
        channels: channel names by index, so that a channel with no events still appears.
        negative: the labels that make a negative stretch.
        max_gap_s: the longest silence inside one negative stretch.
    """
    s = Summary(channels, negative=negative, max_gap_s=max_gap_s)
    evs = list(events)
    # Segments in time order, as the incremental observer expects; alerts in order of start.
    evs.sort(key=lambda e: (float(e.get("start", 0.0) or 0.0), float(e.get("end", 0.0) or 0.0)))
    for ev in evs:
        s.event(ev)
    return s.result(duration)
