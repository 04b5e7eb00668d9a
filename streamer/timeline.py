"""The emotion timeline: smoothing across windows, segments and alerts, the same for files and live streams.

Smoothing is a causal moving average of the model's probabilities over the last ``smooth_windows``
speech windows of a channel (silence longer than ``max_gap_s`` restarts it, and so does a pause of
``reset_pause_s`` or more in the speech before a window's centre: the next utterance may carry
another emotion), so a live stream and a file give the same timeline. Segments are runs of one
smoothed label. A new label must hold for ``min_segment_s`` before it closes the running segment; shorter runs are absorbed into it, so a
segment is never shorter than that (except at the edges of speech). A silence of ``max_gap_s`` or
more closes the segment. A segment's confidence is the mean smoothed probability of its label over
its windows.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from streamer.events import Alert, Event, Segment, Window, from_wire

__all__ = ["TimelineConfig", "Timeline"]


@dataclass(frozen=True)
class TimelineConfig:
    """Smoothing and segmentation parameters."""

    smooth_windows: int = 3
    min_segment_s: float = 2.0
    max_gap_s: float = 2.0
    # a pause this long before a window's centre restarts smoothing (None: never). Chosen by CV on
    # continuous streams (model card, issue 13): 0.3-1.0 s all beat no restart by 0.5-4.6 points
    # per utterance; 0.5 s sits inside the 0.2-0.6 s range of pauses within one emotion's run.
    reset_pause_s: float | None = 0.5


@dataclass
class _Run:
    label: int
    start: float
    end: float
    psum: np.ndarray
    n: int = 1


@dataclass
class _Channel:
    index: int
    name: str
    recent: deque = field(default_factory=deque)
    cur: _Run | None = None
    cand: _Run | None = None
    silence_since: float | None = None
    first: bool = True
    last_end: float = 0.0


class Timeline:
    """Turns classified windows into :class:`~streamer.events.Window`, ``Segment`` and ``Alert`` events, per channel.

    Args:
        labels: label names in model output order.
        channel_names: one name per channel.
        window_s, hop_s: the windows' length and spacing (a window owns the hop-long span at its centre).
        config: smoothing and segmentation parameters.
        alert_rules: rules for :class:`streamer.alerts.AlertTracker`, if any.
    """

    def __init__(self, labels: list[str], channel_names: list[str], window_s: float, hop_s: float,
                 config: TimelineConfig | None = None, alert_rules: list | None = None):
        self.labels = list(labels)
        self.config = config or TimelineConfig()
        self.window_s = window_s
        self.hop_s = hop_s
        self._ch = [_Channel(i, n) for i, n in enumerate(channel_names)]
        self._alerts = None
        if alert_rules:
            from streamer.alerts import AlertTracker

            self._alerts = AlertTracker(alert_rules, hop_s=hop_s)

    def _owned(self, start: float, end: float) -> tuple[float, float]:
        half = min(self.hop_s, end - start) / 2.0
        mid = (start + end) / 2.0
        return max(start, mid - half), min(end, mid + half)

    def _segment(self, ch: _Channel, run: _Run, end: float | None = None) -> Segment:
        p = run.psum / max(run.n, 1)
        return Segment(start=round(run.start, 3), end=round(end if end is not None else run.end, 3),
                       channel=ch.index, channel_name=ch.name, label=self.labels[run.label],
                       confidence=round(float(p[run.label]), 4))

    def _alert(self, ev: Window) -> list[Event]:
        if self._alerts is None:
            return []
        return [from_wire(a) for a in self._alerts.update(ev)]

    def add(self, channel: int, start: float, end: float, speech: bool, probs: np.ndarray | None,
            pause_s: float = 0.0, band: str | None = None) -> list[Event]:
        """Add one classified window of a channel (in time order); return the events it causes.

        ``pause_s``: the longest pause in the hop before the window's centre (restarts smoothing at
        ``config.reset_pause_s``). ``band``: the window event's ``band`` (the prior its features
        were normalised from), passed through.
        """
        ch = self._ch[channel]
        cfg = self.config
        out: list[Event] = []
        a, b = self._owned(start, end)
        if not speech or probs is None:
            ev = Window(start=round(start, 3), end=round(end, 3), channel=ch.index, channel_name=ch.name,
                        speech=False, band=band)
            if ch.silence_since is None:
                ch.silence_since = a
            ch.first = False
            if b - ch.silence_since >= cfg.max_gap_s:
                ch.recent.clear()
                out.extend(self._close(ch, end=ch.silence_since))
            out.insert(0, ev)
            out.extend(self._alert(ev))
            return out
        if ch.first:
            a = start  # the first window of a stream owns everything before its centre too
        ch.first = False
        ch.last_end = end
        ch.silence_since = None
        if cfg.reset_pause_s is not None and pause_s >= cfg.reset_pause_s:
            ch.recent.clear()
        ch.recent.append(np.asarray(probs, dtype=np.float64))
        while len(ch.recent) > cfg.smooth_windows:
            ch.recent.popleft()
        sm = np.mean(ch.recent, axis=0)
        k = int(np.argmax(sm))
        ev = Window(start=round(start, 3), end=round(end, 3), channel=ch.index, channel_name=ch.name,
                    speech=True, label=self.labels[k], confidence=round(float(sm[k]), 4),
                    probs={lab: round(float(v), 4) for lab, v in zip(self.labels, sm)}, band=band,
                    raw=np.asarray(probs, dtype=np.float32))
        out.append(ev)
        if ch.cur is None:
            ch.cur = _Run(k, a, b, sm.copy())
        elif k == ch.cur.label:
            if ch.cand is not None:
                self._absorb(ch.cur, ch.cand)
                ch.cand = None
            ch.cur.end = b
            ch.cur.psum += sm
            ch.cur.n += 1
        else:
            if ch.cand is not None and ch.cand.label != k:
                self._absorb(ch.cur, ch.cand)
                ch.cand = None
            if ch.cand is None:
                ch.cand = _Run(k, a, b, sm.copy())
            else:
                ch.cand.end = b
                ch.cand.psum += sm
                ch.cand.n += 1
            if ch.cand.end - ch.cand.start >= cfg.min_segment_s - 1e-9:
                out.append(self._segment(ch, ch.cur, end=ch.cand.start))
                ch.cur, ch.cand = ch.cand, None
        out.extend(self._alert(ev))
        return out

    @staticmethod
    def _absorb(cur: _Run, cand: _Run) -> None:
        cur.end = cand.end
        cur.psum += cand.psum
        cur.n += cand.n

    def _close(self, ch: _Channel, end: float | None = None) -> list[Event]:
        if ch.cur is None:
            return []
        if ch.cand is not None:
            self._absorb(ch.cur, ch.cand)
            ch.cand = None
        run, ch.cur = ch.cur, None
        e = run.end if end is None else max(run.start, min(run.end, end))
        return [self._segment(ch, run, end=e)]

    def finish(self, end_time: float | None = None) -> list[Event]:
        """Close every open segment (end of stream)."""
        out: list[Event] = []
        for ch in self._ch:
            if ch.cur is not None and ch.silence_since is None:
                ch.cur.end = max(ch.cur.end, ch.last_end if ch.cand is None else ch.cur.end)
                if ch.cand is not None:
                    ch.cand.end = max(ch.cand.end, ch.last_end)
            out.extend(self._close(ch))
            ch.recent.clear()
            ch.silence_since = None
        return out
