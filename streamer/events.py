"""Timeline events: the typed messages a stream produces, and their one wire encoding.

This module is the one description of the server messages (DESIGN.md "Contracts"); the same
objects go to the WebSocket hub, the file writers (:mod:`streamer.formats`), the Python API
(:class:`streamer.api.Timeline`) and ``label -f json``. Each event is a frozen, slotted dataclass
with ``type`` (a class constant) and :meth:`to_wire`, which gives the exact JSON object that goes on
the wire: keys in a fixed order, optional keys left out when they are None, ``seq`` last when given.
Nothing here imports numpy or asyncio (the protocol stays pure: objects in, JSON text out).

Messages, as :func:`encode` writes them (``seq`` rises by one per message of a stream; ``stream``
is added where a message names its stream, e.g. on the wallboard feed)::

    hello    {"type":"hello","labels":[...],"sample_rate":hz,"window":s,"hop":s,"source":...,
              "channels":[names],"model":{"name","version"}[,"colors":{label: "#rrggbb"}]
              [,"encoding","input_rate","input_channels"][,"stream":ID][,"started":unix time]}
    window   {"type":"window","start":s,"end":s,"channel":c,"channel_name":name,"speech":bool,
              "label":l|null,"confidence":p|null,"probs":{label: p}|null,"seq":n}
    segment  {"type":"segment","start":s,"end":s,"channel":c,"channel_name":name,"label":l,
              "confidence":p,"seq":n}
    alert    {"type":"alert","start":s,"end":s,"channel":c,"channel_name":name,"rule":name,
              "label":l,"seq":n}
    end      {"type":"end","seq":n}             (a jsonl file's last line: {"type":"end","duration":s})
    error    {"type":"error","message":text}    (no seq, not kept for replay; "warning: ..." texts
                                                 report lost audio without ending the stream)

A hello has no seq: it is sent first to every subscriber, also on a replay.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Union

from streamer.errors import ProtocolError

if TYPE_CHECKING:  # numpy only for the annotation: importing events stays cheap
    import numpy as np

__all__ = [
    "Event",
    "Hello",
    "Window",
    "Segment",
    "Alert",
    "End",
    "Error",
    "Notice",
    "EVENT_TYPES",
    "to_wire",
    "encode",
    "from_wire",
]


class _Wire:
    """Shared encoding: the dataclass fields in order, optional ones only when set."""

    __slots__ = ()
    type: ClassVar[str]
    # fields left out of the wire object when they are None
    _OPTIONAL: ClassVar[frozenset[str]] = frozenset({"stream"})
    # fields that never go on the wire
    _PRIVATE: ClassVar[frozenset[str]] = frozenset()

    def to_wire(self, seq: int | None = None) -> dict[str, Any]:
        """The JSON object of this event (``seq`` added last when given)."""
        out: dict[str, Any] = {"type": self.type}
        for f in fields(self):  # type: ignore[arg-type]
            name = f.name
            if name in self._PRIVATE:
                continue
            v = getattr(self, name)
            if v is None and name in self._OPTIONAL:
                continue
            if name == "extra":
                out.update(v)
                continue
            if isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, Mapping):
                v = dict(v)  # the caller may change its copy; the event stays as it was
            out[name] = v
        if seq is not None:
            out["seq"] = int(seq)
        return out

    # A read-only view as the wire dict, for code that still takes event dicts (``ev.get("label")``,
    # ``{**hello}``) while it moves to attributes. New code reads the attributes.
    def keys(self) -> list[str]:
        """The wire object's keys."""
        return list(self.to_wire())

    def items(self) -> Any:
        """The wire object's items."""
        return self.to_wire().items()

    def __getitem__(self, key: str) -> Any:
        if key == "type":
            return self.type
        if key in self._PRIVATE or key == "extra" or key not in self.__dataclass_fields__:
            extra = getattr(self, "extra", None)
            if extra and key in extra:
                return extra[key]
            raise KeyError(key)
        v = getattr(self, key)
        if v is None and key in self._OPTIONAL:
            raise KeyError(key)
        return list(v) if isinstance(v, tuple) else v

    def get(self, key: str, default: Any = None) -> Any:
        """``self[key]``, or ``default`` when the wire object has no such key."""
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key, _MISSING) is not _MISSING


_MISSING = object()


@dataclass(frozen=True, slots=True)
class Hello(_Wire):
    """The first message of a stream: what the following events mean.

    Built by whoever starts a stream (the server for a source or an ingest call, the Python API)
    from the pipeline's facts (:meth:`streamer.pipeline.Pipeline.facts`).

    Attributes:
        labels: the model's labels, in output order.
        sample_rate: the model's sample rate (Hz), the rate windows are analysed at.
        window, hop: a window's length and the spacing of window starts (s).
        source: the source's name (a path, ``mic:NAME``, ``ingest:ID``).
        channels: the output channels' names (``["mix"]`` for a mixed stream).
        model: ``{"name", "version"}`` of the model.
        colors: a colour per label (``#rrggbb``) for clients that draw the timeline.
        encoding, input_rate, input_channels: an ingest stream's wire format.
        stream: the stream's id (set by the hub).
        started: when the stream started (Unix time; a resuming client tells a restart by it).
        extra: further keys, kept in order after the others (forward compatibility).
    """

    type: ClassVar[str] = "hello"
    _OPTIONAL: ClassVar[frozenset[str]] = frozenset(
        {"colors", "encoding", "input_rate", "input_channels", "stream", "started"})

    labels: tuple[str, ...]
    sample_rate: int
    window: float
    hop: float
    source: str | None
    channels: tuple[str, ...] = ("mix",)
    model: Mapping[str, Any] | None = None
    colors: Mapping[str, str] | None = None
    encoding: str | None = None
    input_rate: int | None = None
    input_channels: int | None = None
    stream: str | None = None
    started: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, pipeline: Any, source: str | None, **fields_: Any) -> "Hello":
        """The hello of a stream that ``pipeline`` analyses (its labels, rate, window, channels, model).

        ``pipeline`` is a :class:`streamer.pipeline.Pipeline` (or anything with the same facts:
        ``labels``, ``sample_rate``, ``window_s``, ``hop_s``, ``channel_names``, ``model_info``);
        ``fields_`` sets the optional fields (``encoding=``, ``stream=``...). ``colors`` defaults to
        the colours the PNG plot uses (:func:`streamer.plot.label_colours`, the one definition), so
        every client draws a label in the same colour.
        """
        if "colors" not in fields_:
            from streamer.plot import label_colours  # no matplotlib: that loads only to draw

            fields_["colors"] = label_colours(pipeline.labels)
        return cls(labels=tuple(pipeline.labels), sample_rate=int(pipeline.sample_rate),
                   window=pipeline.window_s, hop=pipeline.hop_s, source=source,
                   channels=tuple(pipeline.channel_names), model=dict(pipeline.model_info), **fields_)


@dataclass(frozen=True, slots=True)
class Window(_Wire):
    """One analysed window of one channel.

    Attributes:
        start, end: the window's span in the stream (s, rounded to the millisecond).
        channel, channel_name: the output channel's index and name.
        speech: whether the speech detector found speech; without it there is no label.
        label, confidence: the smoothed winner and its smoothed probability (None without speech).
        probs: smoothed probability per label (None without speech).
        band: ``"telephone"`` or ``"wideband"``: the prior the window's features were normalised
            from (a model with a narrowband prior: telephone-band sources, 8 kHz or less or found
            to be so after their first second of speech, start from their own); None (left out)
            for a model without one.
        raw: the model's own probabilities for this window (numpy float32 [labels]), kept in the
            process (``classify`` averages them); never on the wire or in a file.
        stream: the stream's id where a message names it.
    """

    type: ClassVar[str] = "window"
    _OPTIONAL: ClassVar[frozenset[str]] = frozenset({"stream", "band"})
    _PRIVATE: ClassVar[frozenset[str]] = frozenset({"raw"})

    start: float
    end: float
    channel: int
    channel_name: str | None
    speech: bool
    label: str | None = None
    confidence: float | None = None
    probs: Mapping[str, float] | None = None
    band: str | None = None
    raw: "np.ndarray | None" = field(default=None, compare=False, repr=False)
    stream: str | None = None


@dataclass(frozen=True, slots=True)
class Segment(_Wire):
    """A run of one smoothed label on one channel (closed: its end is final).

    Attributes:
        start, end: the run's span (s).
        channel, channel_name: the output channel.
        label: the run's label.
        confidence: the mean smoothed probability of that label over the run's windows.
        stream: the stream's id where a message names it.
    """

    type: ClassVar[str] = "segment"

    start: float
    end: float
    channel: int
    channel_name: str | None
    label: str
    confidence: float
    stream: str | None = None


@dataclass(frozen=True, slots=True)
class Alert(_Wire):
    """An alert rule fired (:mod:`streamer.alerts`): a stretch of the rule's labels lasted long enough.

    Attributes:
        start, end: the stretch so far, when the rule fired (s).
        channel, channel_name: the channel the rule watched.
        rule: the rule's name.
        label: the most frequent of the rule's labels in the stretch.
        stream: the stream's id where a message names it.
    """

    type: ClassVar[str] = "alert"

    start: float
    end: float
    channel: int
    channel_name: str | None
    rule: str
    label: str | None
    stream: str | None = None


@dataclass(frozen=True, slots=True)
class End(_Wire):
    """The stream is over: nothing follows.

    Attributes:
        duration: the audio's length (s), where known (a jsonl file's last line carries it).
        stream: the stream's id where a message names it.
    """

    type: ClassVar[str] = "end"
    _OPTIONAL: ClassVar[frozenset[str]] = frozenset({"duration", "stream"})

    duration: float | None = None
    stream: str | None = None


@dataclass(frozen=True, slots=True)
class Error(_Wire):
    """A problem reported to subscribers (no seq, not replayed); ``warning: ...`` texts are notices.

    Attributes:
        message: one line for a person.
        stream: the stream's id where a message names it.
    """

    type: ClassVar[str] = "error"

    message: str
    stream: str | None = None


Notice = Error  # the same message: a warning is an error whose text starts with "warning:"

Event = Union[Hello, Window, Segment, Alert, End, Error]

EVENT_TYPES: dict[str, type] = {c.type: c for c in (Hello, Window, Segment, Alert, End, Error)}


def to_wire(event: Event | Mapping[str, Any], seq: int | None = None) -> dict[str, Any]:
    """The JSON object of an event, or of an event dict (the older form; ``raw`` is dropped)."""
    if isinstance(event, _Wire):
        return event.to_wire(seq)
    if not isinstance(event, Mapping):
        raise ProtocolError(f"not an event: {type(event).__name__}")
    out = {k: v for k, v in event.items() if k != "raw"}
    if seq is not None:
        out["seq"] = int(seq)
    return out


def encode(event: Event | Mapping[str, Any], seq: int | None = None) -> str:
    """An event as the compact JSON text frame that goes on the wire.

    Raises:
        ProtocolError: the event cannot be encoded (no ``type``, not JSON-serialisable).
    """
    from streamer.protocol import encode as encode_json

    return encode_json(to_wire(event, seq))


def from_wire(obj: Mapping[str, Any]) -> Event:
    """The event of a wire object (``seq`` is dropped; unknown keys of a hello go to ``extra``).

    Raises:
        ProtocolError: not an object, an unknown ``type``, or a required key missing.
    """
    if not isinstance(obj, Mapping):
        raise ProtocolError("an event must be a JSON object")
    kind = obj.get("type")
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown event type {kind!r}")
    names = [f.name for f in fields(cls) if f.name not in cls._PRIVATE and f.name != "extra"]
    kw: dict[str, Any] = {k: obj[k] for k in names if k in obj}
    if "channel_name" in names:
        kw.setdefault("channel_name", None)  # DESIGN's minimal messages may leave the name out
    if cls is Alert and "start" in kw:
        kw.setdefault("end", kw["start"])
    if cls is Hello:
        kw["labels"] = tuple(obj.get("labels") or ())
        if "channels" in kw:
            kw["channels"] = tuple(kw["channels"] or ())
        kw["extra"] = {k: v for k, v in obj.items() if k not in names and k not in ("type", "seq")}
    try:
        return cls(**kw)
    except TypeError:
        required = [f.name for f in fields(cls) if f.name not in kw and f.name != "extra"
                    and f.default is f.default_factory]  # type: ignore[misc]
        raise ProtocolError(f"{kind} event lacks {', '.join(required) or 'a required key'}") from None
