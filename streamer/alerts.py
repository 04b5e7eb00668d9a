"""Alert rules: "this channel held one of these emotions for at least N seconds".

A rule is written ``[CHANNEL:]LABEL[,LABEL...]>SECONDS`` on the command line (for example
``customer:angry,fearful>10``) or as objects in a JSON file. An `AlertTracker` observes the window
events of a timeline and returns an ``alert`` event the moment a stretch becomes long enough.

Stretch semantics (per rule and per channel, so a channel-less rule watches every channel apart):

* a speech window whose label is in the rule's labels starts or extends the stretch; the stretch
  runs from the first such window's start to the last one's end (with ``hop_s`` given, each window
  counts as the hop-long span at its centre, as the timeline's segments do, so alert times line up
  with segment times and N matching windows make N hops);
* a silent window (``speech`` false or no label) does not end it, unless the silence lasts longer
  than ``max_gap_s``; the silence is measured from the start of the first silent window to the
  start of the next matching window, i.e. silent hops times the hop, whether windows overlap or not;
* a speech window with any other label ends it at once;
* a stretch fires once, when ``end - start >= min_duration_s``; the alert's ``end`` is the end of
  the window that made it fire and its ``label`` the most frequent label in the stretch so far.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from streamer.errors import UsageError

__all__ = ["AlertRule", "AlertTracker", "parse_rule", "load_rules", "rule_name", "check_channels"]

DEFAULT_MAX_GAP_S = 2.0

_RULE_RE = re.compile(
    r"""^\s*(?:(?P<channel>[^:>]+?)\s*:)?\s*   # optional "channel:"
        (?P<labels>[^:>]+?)\s*                  # labels, comma or | separated
        >=?\s*(?P<seconds>[^\s>]+)\s*$          # ">10" (">=10" reads the same)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class AlertRule:
    """One alert rule.

    Attributes:
        name: shown in alert events and outputs.
        channel: a channel name (``"customer"``), a channel index (``1``), or None for any channel.
        labels: the emotions that count towards the stretch.
        min_duration_s: how long the stretch must last (window start to window end) to fire.
        max_gap_s: the longest silence allowed inside one stretch.
    """

    name: str
    channel: str | int | None
    labels: frozenset[str]
    min_duration_s: float
    max_gap_s: float = DEFAULT_MAX_GAP_S

    def __post_init__(self) -> None:
        # Accept any iterable of labels from Python callers; the rule itself stays hashable.
        if not isinstance(self.labels, frozenset):
            object.__setattr__(self, "labels", frozenset(self.labels))
        if not self.labels:
            raise UsageError(f"alert rule {self.name!r}: no labels")
        if not (math.isfinite(self.min_duration_s) and self.min_duration_s >= 0):
            raise UsageError(f"alert rule {self.name!r}: seconds must be a number >= 0")
        if not (math.isfinite(self.max_gap_s) and self.max_gap_s >= 0):
            raise UsageError(f"alert rule {self.name!r}: max_gap_s must be a number >= 0")

    def matches_channel(self, channel: int, channel_name: str | None) -> bool:
        """Whether a window of this channel (index and name) is watched by the rule."""
        if self.channel is None:
            return True
        if isinstance(self.channel, int):
            return channel == self.channel
        return channel_name == self.channel


def _fmt_seconds(s: float) -> str:
    return f"{s:g}"


def rule_name(channel: str | int | None, labels: Sequence[str], seconds: float) -> str:
    """The automatic name of a rule, e.g. ``"customer angry|fearful >10s"``."""
    head = "" if channel is None else f"{channel} "
    return f"{head}{'|'.join(labels)} >{_fmt_seconds(seconds)}s"


def _channel_of(text: str) -> str | int | None:
    text = text.strip()
    if text in ("", "*", "any"):
        return None
    # A bare number is a channel index, as in the events' "channel" field (0-based).
    return int(text) if text.isdigit() else text


def _check_labels(labels: Sequence[str], known: Iterable[str] | None, where: str) -> None:
    if known is None:
        return
    known = list(known)
    bad = [lb for lb in labels if lb not in known]
    if bad:
        raise UsageError(f"{where}: unknown label {bad[0]!r} (labels: {', '.join(known)})")


def parse_rule(text: str, labels: Iterable[str] | None = None,
               max_gap_s: float = DEFAULT_MAX_GAP_S) -> AlertRule:
    """Parse ``[CHANNEL:]LABEL[,LABEL...]>SECONDS`` into a rule.

    Args:
        text: e.g. ``"customer:angry,fearful>10"``, ``"angry>10"``, ``"1:sad>30"`` (channel index).
        labels: the model's labels; when given, unknown labels are refused.
        max_gap_s: the longest silence allowed inside a stretch.

    Raises:
        UsageError: the text does not follow the pattern.
    """
    m = _RULE_RE.match(text or "")
    if not m:
        raise UsageError(f"bad alert rule {text!r}: expected [CHANNEL:]LABEL[,LABEL...]>SECONDS, "
                         "e.g. customer:angry,fearful>10")
    names = [lb.strip() for lb in re.split(r"[,|]", m.group("labels")) if lb.strip()]
    if not names:
        raise UsageError(f"bad alert rule {text!r}: no labels")
    try:
        seconds = float(m.group("seconds").rstrip("s"))
    except ValueError:
        raise UsageError(f"bad alert rule {text!r}: {m.group('seconds')!r} is not a number "
                         "of seconds") from None
    if not (math.isfinite(seconds) and seconds >= 0):
        raise UsageError(f"bad alert rule {text!r}: seconds must be a number >= 0")
    _check_labels(names, labels, f"alert rule {text!r}")
    channel = _channel_of(m.group("channel") or "")
    return AlertRule(rule_name(channel, names, seconds), channel, frozenset(names), seconds,
                     max_gap_s)


_FILE_KEYS = {"name", "channel", "labels", "seconds", "max_gap_s"}


def _rule_from_obj(obj: Any, where: str, labels: Iterable[str] | None) -> AlertRule:
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: expected an object like "
                         '{"channel": "customer", "labels": ["angry"], "seconds": 10}')
    unknown = sorted(set(obj) - _FILE_KEYS)
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r} "
                         f"(allowed: {', '.join(sorted(_FILE_KEYS))})")
    lbs = obj.get("labels")
    if isinstance(lbs, str):  # "angry" or "angry,fearful" is an easy slip; read it kindly
        lbs = [x.strip() for x in re.split(r"[,|]", lbs) if x.strip()]
    if (not isinstance(lbs, list) or not lbs
            or not all(isinstance(x, str) and x.strip() for x in lbs)):
        raise UsageError(f"{where}: \"labels\" must be a non-empty list of label names")
    lbs = [x.strip() for x in lbs]
    _check_labels(lbs, labels, where)
    if "seconds" not in obj:
        raise UsageError(f"{where}: missing \"seconds\"")
    seconds = obj["seconds"]
    if (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds) or seconds < 0):
        raise UsageError(f"{where}: \"seconds\" must be a number >= 0")
    channel = obj.get("channel")
    if isinstance(channel, bool) or not (channel is None or isinstance(channel, (str, int))):
        raise UsageError(f"{where}: \"channel\" must be a name, an index or null")
    if isinstance(channel, int) and channel < 0:
        raise UsageError(f"{where}: \"channel\" index must be >= 0")
    if isinstance(channel, str):
        channel = _channel_of(channel)
    gap = obj.get("max_gap_s", DEFAULT_MAX_GAP_S)
    if (isinstance(gap, bool) or not isinstance(gap, (int, float))
            or not math.isfinite(gap) or gap < 0):
        raise UsageError(f"{where}: \"max_gap_s\" must be a number >= 0")
    name = obj.get("name")
    if name is None:
        name = rule_name(channel, lbs, float(seconds))
    elif not isinstance(name, str) or not name.strip():
        raise UsageError(f"{where}: \"name\" must be a non-empty string")
    return AlertRule(name.strip(), channel, frozenset(lbs), float(seconds), float(gap))


def load_rules(path: str | os.PathLike[str], labels: Iterable[str] | None = None) -> list[AlertRule]:
    """Read rules from a JSON file: ``[{"name", "channel", "labels": [...], "seconds"}, ...]``.

    ``name`` (default: automatic), ``channel`` (default: any) and ``max_gap_s`` (default 2) are
    optional. A single object is read as a list of one.

    Raises:
        UsageError: the file is missing or unreadable, is not JSON, or a rule is malformed; the
            message names the file and the rule's position.
    """
    p = os.fspath(path)
    try:
        with open(p, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise UsageError(f"alert rules file not found: {p}") from None
    except IsADirectoryError:
        raise UsageError(f"alert rules file is a directory: {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read alert rules file {p}: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"alert rules file {p} is not valid JSON: {e.msg} at line {e.lineno} "
                         f"column {e.colno}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise UsageError(f"alert rules file {p}: expected a JSON list of rules")
    if labels is not None:
        labels = list(labels)
    return [_rule_from_obj(obj, f"alert rules file {p}, rule {i + 1}", labels)
            for i, obj in enumerate(data)]


def check_channels(rules: Iterable[AlertRule], channel_names: Sequence[str]) -> None:
    """Refuse rules that watch a channel the timeline does not have: such a rule could never fire.

    Args:
        rules: the rules.
        channel_names: the timeline's channel names by index (``["mix"]`` for a mixed stream).

    Raises:
        UsageError: a rule names an unknown channel or an index beyond the channel count.
    """
    names = list(channel_names)
    for rule in rules:
        ch = rule.channel
        if ch is None:
            continue
        if isinstance(ch, int):
            if not 0 <= ch < len(names):
                raise UsageError(f"alert rule {rule.name!r}: no channel {ch} (channel indexes 0 to "
                                 f"{len(names) - 1}: {', '.join(names)})")
        elif ch not in names:
            hint = "; name the channels with --channels split --channel-names A,B" if names == ["mix"] else ""
            raise UsageError(f"alert rule {rule.name!r}: no channel {ch!r} (channels: {', '.join(names)}){hint}")


@dataclass
class _Stretch:
    start: float
    end: float
    counts: Counter = field(default_factory=Counter)
    gap_start: float | None = None  # start of the first silent window since the last match
    fired: bool = False


class AlertTracker:
    """Turns window events into alert events, once per qualifying stretch.

    Keeps one open stretch per (rule, channel): memory does not grow with the stream.

    Args:
        rules: the rules to watch.
        hop_s: the windows' spacing; when given, a window stands for the hop-long span at its
            centre (the first window of a channel also owns everything before its centre), as in
            `streamer.timeline.Timeline`. None: a window stands for its whole extent.
    """

    def __init__(self, rules: Iterable[AlertRule], hop_s: float | None = None):
        self.rules: list[AlertRule] = list(rules)
        self.hop_s = hop_s
        self._open: dict[tuple[int, int], _Stretch] = {}
        self._seen: set[int] = set()

    def reset(self) -> None:
        """Forget every open stretch (a new stream)."""
        self._open.clear()
        self._seen.clear()

    def _span(self, ch: int, start: float, end: float) -> tuple[float, float]:
        first = ch not in self._seen
        self._seen.add(ch)
        if self.hop_s is None:
            return start, end
        half = min(self.hop_s, end - start) / 2.0
        mid = (start + end) / 2.0
        return (start if first else max(start, mid - half)), min(end, mid + half)

    def update(self, ev: dict[str, Any]) -> list[dict[str, Any]]:
        """Observe one event; returns the alerts it raises (usually none).

        Only ``window`` events count (an event without ``type`` is taken as a window); others are
        ignored. Windows of one channel must arrive in time order.
        """
        if ev.get("type", "window") != "window" or not self.rules:
            return []
        ch = int(ev.get("channel", 0) or 0)
        ch_name = ev.get("channel_name")
        label = ev.get("label")
        silent = not ev.get("speech", label is not None) or label is None
        start, end = self._span(ch, float(ev["start"]), float(ev["end"]))
        out: list[dict[str, Any]] = []
        for ri, rule in enumerate(self.rules):
            if not rule.matches_channel(ch, ch_name):
                continue
            key = (ri, ch)
            st = self._open.get(key)
            if silent:
                if st is not None:
                    if st.gap_start is None:
                        st.gap_start = start
                    # The silence lasts at least until this window's start: past the limit, the
                    # stretch is over whatever comes next.
                    if start - st.gap_start > rule.max_gap_s:
                        del self._open[key]
                continue
            if label not in rule.labels:
                self._open.pop(key, None)
                continue
            if st is not None and st.gap_start is not None and start - st.gap_start > rule.max_gap_s:
                st = None
            if st is None:
                st = _Stretch(start=start, end=end)
                self._open[key] = st
            st.end = max(st.end, end)
            st.gap_start = None
            st.counts[label] += 1
            if not st.fired and st.end - st.start >= rule.min_duration_s - 1e-9:
                st.fired = True
                out.append({
                    "type": "alert",
                    "start": st.start,
                    "end": st.end,
                    "channel": ch,
                    "channel_name": ch_name,
                    "rule": rule.name,
                    "label": st.counts.most_common(1)[0][0],
                })
        return out
