"""The Python API behind ``streamer.load_model``, ``streamer.label`` and ``streamer.stream``.

These are the objects the command line uses: :func:`label` runs the same analysis as
``emostream label`` (:func:`streamer.labelling.analyse`) and :meth:`Timeline.to_dict` writes
through the same JSON writer, so it equals ``label -f json`` on the same audio. :func:`stream`
runs the same pipeline as ``emostream serve`` and yields the same typed events
(:mod:`streamer.events`) that the server encodes for its subscribers.
"""

from __future__ import annotations

import io
import json
import os
import queue
import threading
from typing import Any, AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence

import numpy as np

from streamer.errors import UsageError
from streamer.events import Alert, End, Event, Hello, Segment, Window
from streamer.labelling import Analysis, Model, analyse, load_model, overall
from streamer.sources import ArraySource, Source, open_source

__all__ = ["Model", "Timeline", "EventStream", "load_model", "label", "label_source", "stream"]

AudioInput = Any  # a path (str or PathLike), a numpy array [n] or [n, channels], or a Source


class Timeline:
    """The emotion timeline of one recording, as ``emostream label`` finds it.

    Attributes:
        source: the recording's name (its path, or ``array``).
        duration: seconds of audio analysed.
        sample_rate: the recording's own sample rate (Hz).
        channels: output channel names (``["mix"]`` for a mixed timeline).
        model: ``{"name", "version", "labels"}`` of the model used.
        events: every window, segment and alert event in the order they were produced.
        windows, segments, alerts: the events of each kind (:class:`~streamer.events.Window`,
            :class:`~streamer.events.Segment`, :class:`~streamer.events.Alert`).
        warnings: problems met while reading that did not stop the analysis.
    """

    def __init__(self, header: dict[str, Any], events: list[Event], analysis: Analysis):
        self._header = dict(header)
        self._analysis = analysis
        self.events = list(events)
        self.source: str = analysis.source
        self.duration: float = analysis.duration
        self.sample_rate: int = analysis.sample_rate
        self.channels: list[str] = list(analysis.channel_names)
        self.model: dict[str, Any] = dict(header.get("model") or {})
        self.windows = [e for e in self.events if isinstance(e, Window)]
        self.segments = [e for e in self.events if isinstance(e, Segment)]
        self.alerts = [e for e in self.events if isinstance(e, Alert)]
        self.warnings: list[str] = list(analysis.stats.warnings)

    def __repr__(self) -> str:
        return (f"Timeline({self.source!r}, {self.duration:.1f} s, channels={self.channels}, "
                f"{len(self.windows)} windows, {len(self.segments)} segments, {len(self.alerts)} alerts)")

    def overall(self, channel: int | None = None) -> tuple[str | None, float, dict[str, float]]:
        """One label for the recording (or one channel): what ``emostream classify`` prints.

        Returns:
            (label, confidence, probabilities by label) from the mean of the speech windows' model
            probabilities; (None, 0.0, {}) when there is no speech.
        """
        return overall(self._analysis, self.model.get("labels") or [], channel)

    def _write(self, fmt: str, out: Any) -> None:
        from streamer.formats import open_writer

        writer = open_writer(fmt, out)
        writer.header(self._header)
        for ev in self.events:
            writer.event(ev)
        writer.close(duration=self.duration)

    def to_dict(self) -> dict[str, Any]:
        """The ``label -f json`` object of this timeline."""
        buf = io.StringIO()
        self._write("json", buf)
        return json.loads(buf.getvalue())

    def write(self, path: str | os.PathLike[str], format: str | None = None) -> None:
        """Write the timeline in any ``label`` format (json, jsonl, csv, vtt, srt, audacity, textgrid).

        ``format`` defaults to the one the file's extension names (``.vtt``, ``.TextGrid``...). The
        file appears complete or not at all (written under a temporary name, then renamed).

        Raises:
            UsageError: no format given and the extension names none, or an unknown format.
            OutputError: the file cannot be written.
        """
        from streamer.formats import EXTENSIONS, FORMATS
        from streamer.outputs import atomic_open

        name = os.fspath(path)
        if format is None:
            ext = os.path.splitext(name)[1].lower()
            by_ext = {v.lower(): k for k, v in EXTENSIONS.items()}
            if ext not in by_ext:
                raise UsageError(f"cannot tell the format of {name!r} from its extension: give format= "
                                 f"(one of {', '.join(FORMATS)})")
            format = by_ext[ext]
        if format not in FORMATS:
            raise UsageError(f"unknown format {format!r} (one of {', '.join(FORMATS)})")
        with atomic_open(name, what="timeline") as out:
            self._write(format, out)


def _model(model: Model | str | os.PathLike[str] | None) -> Model:
    if isinstance(model, Model):
        return model
    return load_model(model)


def _rules(alerts: Iterable[Any], labels: Sequence[str]) -> list:
    from streamer.alerts import AlertRule, parse_rule

    if isinstance(alerts, str):
        alerts = [alerts]
    rules = []
    for a in alerts or ():
        if isinstance(a, AlertRule):
            rules.append(a)
        elif isinstance(a, str):
            rules.append(parse_rule(a, labels))
        else:
            raise UsageError(f"an alert rule is a string such as 'customer:angry>10' or an AlertRule, "
                             f"not {type(a).__name__}")
    return rules


def _source(audio: AudioInput, sample_rate: int | None) -> Source:
    """A Source for a path, a numpy array (with its sample rate) or a Source."""
    if isinstance(audio, Source):
        return audio
    if isinstance(audio, np.ndarray):
        if not sample_rate:
            raise UsageError("an array needs its sample_rate")
        if audio.ndim not in (1, 2) or audio.size == 0:
            raise UsageError(f"expected samples [n] or [n, channels], got an array of shape {audio.shape}")
        y = audio.astype(np.float32) if audio.dtype.kind == "f" else _int_pcm(audio)
        return ArraySource(y, int(sample_rate))
    if isinstance(audio, (str, bytes, os.PathLike)):
        if sample_rate is not None:
            raise UsageError("sample_rate is for arrays; a file states its own")
        return open_source(os.fsdecode(audio))
    raise UsageError(f"expected a path, a numpy array or a Source, not {type(audio).__name__}")


def _int_pcm(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind not in "iu":
        raise UsageError(f"unsupported sample type {a.dtype}")
    info = np.iinfo(a.dtype)
    mid = (int(info.max) + int(info.min) + 1) / 2.0  # 0 for signed, 2**(bits-1) for unsigned
    return ((a.astype(np.float64) - mid) / (int(info.max) - mid + 1)).astype(np.float32)


def label(path_or_array: AudioInput, sample_rate: int | None = None, channels: str = "mix",
          channel_names: Sequence[str] | None = None, alerts: Iterable[Any] = (),
          model: Model | str | os.PathLike[str] | None = None) -> Timeline:
    """The emotion timeline of a recording (what ``emostream label`` writes).

    Args:
        path_or_array: an audio file (any format ``label`` reads), or samples as a numpy array
            ``[n]`` (mono) or ``[n, channels]``: floats in [-1, 1] or integer PCM.
        sample_rate: the array's sample rate in Hz (only for arrays).
        channels: ``mix`` (one timeline) or ``split`` (one per channel).
        channel_names: names of the output channels, e.g. ``["agent", "customer"]``.
        alerts: alert rules, e.g. ``["customer:angry,fearful>10"]`` (or AlertRule objects).
        model: a :class:`Model` from :func:`load_model`, a model path, or None for the shipped one.

    Raises:
        InputError: the file is missing, unreadable, empty or holds no audio.
        UsageError: a bad option (channel names, alert rule, an array without its rate).
        ModelError: the model cannot be loaded.
    """
    m = _model(model)
    return label_source(_source(path_or_array, sample_rate), m, channels=channels, channel_names=channel_names,
                        alert_rules=_rules(alerts, m.labels))


def label_source(src: Source, model: Model, *, channels: str = "mix", channel_names: Sequence[str] | None = None,
                 alert_rules: list | None = None, check_rules: bool = True) -> Timeline:
    """:func:`label` for an open source and parsed rules (the server's ``POST /label`` calls this too).

    ``check_rules`` refuses rules for channels the recording does not have (``label`` does; an
    upload server that has one rule set for every upload does not).
    """
    from streamer.alerts import check_channels

    header: dict[str, Any] = {}
    events: list[Event] = []

    def on_header(info: dict[str, Any]) -> None:
        if alert_rules and check_rules:
            check_channels(alert_rules, info["channels"])
        header.update(info)

    res = analyse(src, model.meta, model.classifier, channels=channels,
                  channel_names=list(channel_names) if channel_names else None, alert_rules=alert_rules or None,
                  on_header=on_header, on_event=events.append)
    return Timeline(header, events, res)


class EventStream:
    """The events of one stream: a :class:`~streamer.events.Hello`, then windows, segments and alerts
    as the audio is analysed, then an :class:`~streamer.events.End`.

    Iterate it with ``for`` (files, arrays, the microphone) or ``async for`` (any source; an async
    iterator of PCM blocks only this way). Leaving the loop early stops the analysis and closes the
    source.
    """

    def __init__(self, source: Any, model: Model, *, sample_rate: int | None, channels: str,
                 channel_names: Sequence[str] | None, rules: list, encoding: str,
                 input_channels: int | None, realtime: bool):
        self._source = source
        self.model = model
        self._rate = sample_rate
        self._channels = channels
        self._names = list(channel_names) if channel_names else None
        self._rules = rules or None
        self._encoding = encoding
        self._in_channels = input_channels
        self._realtime = realtime
        self._used = False

    def _pipeline(self, rate: int, in_channels: int) -> Any:
        from streamer.pipeline import Pipeline

        return Pipeline(self.model.meta, self.model.classifier, in_rate=rate, in_channels=in_channels,
                        channels=self._channels, channel_names=self._names, alert_rules=self._rules)

    def _once(self) -> None:
        if self._used:
            raise UsageError("a stream can be iterated once")
        self._used = True

    def _is_async(self) -> bool:
        return hasattr(self._source, "__aiter__")

    # -- pull sources: file, array, microphone -------------------------------------------------

    def __iter__(self) -> Iterator[Event]:
        if self._is_async():
            raise UsageError("an async iterator of audio blocks is read with `async for`")
        self._once()
        from streamer.pipeline import run

        src = _pull_source(self._source, self._rate)
        try:
            pipe = self._pipeline(src.sample_rate, src.channels)
            yield Hello.of(pipe, src.uri)
            batches: queue.Queue[Any] = queue.Queue(maxsize=16)  # a slow reader holds a file back
            stop = threading.Event()
            failed: list[BaseException] = []

            def put(item: Any) -> None:
                while not stop.is_set():
                    try:
                        batches.put(item, timeout=0.2)
                        return
                    except queue.Full:
                        continue

            def work() -> None:
                try:
                    run(src, pipe, put, realtime=self._realtime, stop=stop)
                except BaseException as exc:  # raised in the reader's thread below
                    failed.append(exc)
                finally:
                    put(None)

            worker = threading.Thread(target=work, name=f"emostream-stream-{src.uri}", daemon=True)
            worker.start()
            try:
                while True:
                    batch = batches.get()
                    if batch is None:
                        break
                    yield from batch
            finally:
                stop.set()
                worker.join(timeout=10)
            if failed:
                raise failed[0]
            yield End(duration=round(pipe.seconds, 3))
        finally:
            src.close()

    # -- async iteration: any source -----------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Event]:
        if self._is_async():
            return self._from_blocks()
        return self._from_thread()

    async def _from_thread(self) -> AsyncIterator[Event]:
        import asyncio

        it = iter(self)
        done = object()
        try:
            while True:
                ev = await asyncio.to_thread(next, it, done)
                if ev is done:
                    return
                yield ev
        finally:
            it.close()  # type: ignore[attr-defined]

    async def _from_blocks(self) -> AsyncIterator[Event]:
        import asyncio

        from streamer.codecs import decode_pcm

        self._once()
        if not self._rate:
            raise UsageError("an async iterator of audio blocks needs its sample_rate")
        pipe = None
        uri = "stream"
        async for block in self._source:
            if isinstance(block, (bytes, bytearray, memoryview)):
                x = decode_pcm(bytes(block), self._encoding, self._in_channels or 1)
            else:
                x = np.asarray(block)
                x = x.astype(np.float32) if x.dtype.kind == "f" else _int_pcm(x)
                x = x[:, None] if x.ndim == 1 else x
            if pipe is None:
                pipe = self._pipeline(int(self._rate), self._in_channels or x.shape[1])
                yield Hello.of(pipe, uri)
            if len(x):
                for ev in await asyncio.to_thread(pipe.feed, x):
                    yield ev
        if pipe is None:  # no audio at all: still a well-formed (empty) stream
            pipe = self._pipeline(int(self._rate), self._in_channels or 1)
            yield Hello.of(pipe, uri)
        for ev in await asyncio.to_thread(pipe.finish):
            yield ev
        yield End(duration=round(pipe.seconds, 3))


def _pull_source(source: Any, sample_rate: int | None) -> Source:
    if isinstance(source, str) and (source == "mic" or source.startswith("mic:")):
        from streamer.mic import MicSource

        device: Any = source[4:] or None
        return MicSource(device=int(device) if device and device.isdigit() else device,
                         sample_rate=sample_rate)
    return _source(source, sample_rate)


def stream(source: AudioInput | AsyncIterable[Any], model: Model | str | os.PathLike[str] | None = None, *,
           sample_rate: int | None = None, channels: str = "mix", channel_names: Sequence[str] | None = None,
           alerts: Iterable[Any] = (), encoding: str = "pcm_s16le", input_channels: int | None = None,
           realtime: bool = False) -> EventStream:
    """The events of a live or recorded source as they happen (what ``emostream serve`` publishes).

    Args:
        source: a file path; a numpy array (with ``sample_rate``); ``"mic"`` or ``"mic:DEVICE"``
            (index or name) for a microphone; a :class:`~streamer.sources.Source`; or an async
            iterator of PCM blocks (numpy arrays, or bytes in ``encoding`` with ``input_channels``
            interleaved) at ``sample_rate``.
        model: a :class:`Model`, a model path, or None for the shipped one.
        sample_rate: the rate of an array or of async blocks (for a microphone: the capture rate).
        channels, channel_names, alerts: as for :func:`label`.
        encoding: ``pcm_s16le``, ``mulaw``, ``alaw`` or ``f32le`` for bytes blocks.
        input_channels: channels interleaved in bytes blocks (default 1).
        realtime: pace a file or array as if it were live.

    Returns:
        an :class:`EventStream`: ``for event in ...`` or ``async for event in ...``.
    """
    m = _model(model)
    return EventStream(source, m, sample_rate=sample_rate, channels=channels, channel_names=channel_names,
                       rules=_rules(alerts, m.labels), encoding=encoding, input_channels=input_channels,
                       realtime=realtime)
