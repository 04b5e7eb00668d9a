"""Labelling a recording: the pipeline run over a file source, feeding any sinks. Shared by the
`classify` and `label` commands and the server's `POST /label`."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import numpy as np

from streamer.classifier import Classifier
from streamer.config import ModelMeta
from streamer.events import Event, Window
from streamer.pipeline import Pipeline, RunStats, run
from streamer.sources import Source, open_source

__all__ = ["Model", "Analysis", "analyse", "load_model", "header_info", "overall", "make_labeler"]


class Model(NamedTuple):
    """A loaded model: its metadata and its classifier (unpacks as ``meta, classifier``).

    One classifier serves any number of pipelines and calls (it holds the TFLite interpreter).
    """

    meta: ModelMeta
    classifier: Classifier

    @property
    def labels(self) -> list[str]:
        """Label names, in the model's output order."""
        return list(self.meta.labels)

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def version(self) -> str:
        return self.meta.version

    @property
    def sample_rate(self) -> int:
        """The rate the model analyses audio at (any input rate is resampled to it)."""
        return int(self.meta.features.sample_rate)


def load_model(model: str | os.PathLike[str] | None = None, window: float | None = None,
               hop: float | None = None) -> Model:
    """The model at a ``.tflite`` path (its ``.json`` beside it), or the shipped one (None; or $EMOSTREAM_MODEL).

    ``window`` and ``hop`` (seconds) override the model's window length and spacing.

    Raises:
        ModelError: a missing or unreadable model, or metadata that does not match it.
    """
    from streamer.config import load_meta

    meta = load_meta(None if model is None else os.fspath(model))
    if window or hop:
        meta = meta.with_window(window, hop)
    return Model(meta, Classifier(meta=meta))


@dataclass
class Analysis:
    """The outcome of analysing one source: its format, the events' raw window probabilities, stats."""

    source: str
    duration: float
    sample_rate: int
    channel_names: list[str]
    stats: RunStats
    raw: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (channel, probs) of speech windows


def header_info(meta: ModelMeta, source: str, sample_rate: int, channel_names: list[str],
                duration: float | None) -> dict[str, Any]:
    """What a writer's header gets: source, duration, sample rate, model and channels."""
    return {"source": source, "duration": duration, "sample_rate": sample_rate,
            "model": {"name": meta.name, "version": meta.version, "labels": list(meta.labels)},
            "channels": list(channel_names)}


def analyse(src: Source | str | os.PathLike[str], meta: ModelMeta, classifier: Classifier, *,
            channels: str = "mix", channel_names: list[str] | None = None, alert_rules: list | None = None,
            on_header: Callable[[dict[str, Any]], None] | None = None,
            on_event: Callable[[Event], None] | None = None,
            progress: bool = False) -> Analysis:
    """Run a file (or any source) through the pipeline as fast as it goes.

    ``on_header`` is called once before any event with :func:`header_info`; ``on_event`` with each
    event (:mod:`streamer.events`) as it is produced (so a jsonl sink writes as it goes).
    """
    source = open_source(src) if not isinstance(src, Source) else src
    with source:
        pipe = Pipeline(meta, classifier, in_rate=source.sample_rate, in_channels=source.channels,
                        channels=channels, channel_names=channel_names, alert_rules=alert_rules)
        result = Analysis(source=source.uri, duration=0.0, sample_rate=source.sample_rate,
                          channel_names=pipe.channel_names, stats=RunStats())
        if on_header is not None:
            on_header(header_info(meta, source.uri, source.sample_rate, pipe.channel_names, source.duration))

        def sink(events: list[Event]) -> None:
            for ev in events:
                if isinstance(ev, Window) and ev.raw is not None:
                    result.raw.append((ev.channel, ev.raw))
                if on_event is not None:
                    on_event(ev)

        bar = _Progress(source.duration) if progress else None
        result.stats = run(source, pipe, sink, progress=bar)
        if bar is not None:
            bar.done()
        result.duration = round(pipe.seconds, 3)
        if pipe.samples_in == 0:
            from streamer.errors import InputError

            detail = f" ({result.stats.warnings[0]})" if result.stats.warnings else ""
            raise InputError(f"{source.uri}: no audio could be decoded{detail}", source.uri)
    return result


def overall(analysis: Analysis, labels: list[str], channel: int | None = None) -> tuple[str | None, float, dict[str, float]]:
    """One label for a recording: the mean of its speech windows' raw probabilities."""
    probs = [p for ch, p in analysis.raw if channel is None or ch == channel]
    if not probs:
        return None, 0.0, {}
    mean = np.mean(probs, axis=0)
    k = int(np.argmax(mean))
    return labels[k], float(mean[k]), {lab: round(float(v), 4) for lab, v in zip(labels, mean)}


def make_labeler(meta: ModelMeta, classifier: Classifier, *, channels: str = "mix",
                 channel_names: list[str] | None = None, alert_rules: list | None = None
                 ) -> Callable[[str, str], dict[str, Any]]:
    """A (path, display name) -> ``label -f json`` object function (the server's ``POST /label``)."""
    from streamer.api import label_source

    model = Model(meta, classifier)

    def label(path: str, name: str) -> dict[str, Any]:
        src = open_source(path)
        n = src.channels if channels == "split" else 1
        names = channel_names if channel_names and len(channel_names) == n else None
        obj = label_source(src, model, channels=channels, channel_names=names, alert_rules=alert_rules,
                           check_rules=False).to_dict()
        obj["source"] = name
        return obj
    return label


class _Progress:
    """A one-line progress bar on stderr, only for a terminal and a file longer than a minute."""

    def __init__(self, total: float | None):
        self.total = total
        self.on = bool(total and total > 60 and sys.stderr.isatty())
        self._last = -1

    def __call__(self, seconds: float) -> None:
        if not self.on or not self.total:
            return
        pct = int(100 * min(1.0, seconds / self.total))
        if pct != self._last:
            self._last = pct
            bar = "#" * (pct // 4)
            sys.stderr.write(f"\r[{bar:<25}] {pct:3d}% {seconds:8.0f}/{self.total:.0f} s")
            sys.stderr.flush()

    def done(self) -> None:
        if self.on:
            sys.stderr.write("\n")
