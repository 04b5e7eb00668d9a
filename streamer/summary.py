"""End-of-call summary per channel: time per emotion, speech and silence, the longest negative
stretch, the alerts raised, the dominant emotion.

Times come from segment events (windows overlap, segments do not), so a channel's seconds per
emotion add up to its speech seconds. A segment without a label counts as silence.

The result of `summarise` / `Summary.result`::

    {"duration": s,
     "channels": [{"channel": i, "channel_name": n,
                   "speech_s": s, "silence_s": s,
                   "emotions": {label: s},            # every label seen, in first-seen order
                   "share": {label: fraction of speech},
                   "dominant": label | None,          # most seconds; None without speech
                   "longest_negative": {"start", "end", "seconds", "label"} | None,
                   "alerts": [{"rule", "start", "end", "label"}]}]}

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

__all__ = ["NEGATIVE_LABELS", "Summary", "summarise"]

NEGATIVE_LABELS = frozenset({"angry", "fearful", "sad", "disgust"})


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
            })
        return {"duration": _r(d), "channels": out}


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
