"""The one pipeline: any audio source to an emotion timeline.

    source -> Conditioner (channel policy, resample) -> RingBuffer -> per-channel frame MFCC
           -> speech gate -> running normaliser -> window means -> TFLite classifier -> Timeline

A file is a source that runs as fast as the machine allows; a microphone or a network stream
cannot run faster than real time. ``run`` drives a pull source through a ring buffer with a
producer thread (decode and resample overlap with features and inference); a push source such as
network ingest calls :meth:`Pipeline.feed` directly.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from streamer.analysis import ChannelAnalyzer, Windows, classify_windows
from streamer.classifier import Classifier
from streamer.config import NARROWBAND_MAX_RATE, ModelMeta
from streamer.errors import UsageError
from streamer.events import Event
from streamer.ringbuffer import RingBuffer
from streamer.sources import Source
from streamer.timeline import Timeline, TimelineConfig

__all__ = ["Conditioner", "ChannelAnalyzer", "Pipeline", "RunStats", "run", "make_pipeline_factory"]

Events = list[Event]


class Conditioner:
    """Channel policy and resampling to the model's rate, streaming (soxr keeps filter state).

    ``mix`` averages the channels into one; ``split`` keeps each channel as its own stream.
    """

    def __init__(self, in_rate: int, in_channels: int, out_rate: int, channels: str = "mix"):
        if channels not in ("mix", "split"):
            raise UsageError(f"unknown channel policy {channels!r} (mix or split)")
        if not 1 <= in_channels <= 64:
            raise UsageError(f"unsupported channel count {in_channels}")
        if not 1000 <= in_rate <= 384000:
            raise UsageError(f"unsupported sample rate {in_rate} Hz")
        self.in_rate, self.in_channels, self.out_rate, self.policy = in_rate, in_channels, out_rate, channels
        self.out_channels = 1 if channels == "mix" else in_channels
        self._rs = None
        self.finished = False  # the resampler's tail has been taken
        if in_rate != out_rate:
            import soxr

            self._rs = soxr.ResampleStream(in_rate, out_rate, self.out_channels, dtype="float32", quality="HQ")

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        """Convert a block [n, in_channels] at ``in_rate`` to [m, out_channels] at ``out_rate``."""
        x = np.asarray(block, dtype=np.float32)
        if x.ndim == 1:
            x = x[:, None]
        if x.shape[1] != self.in_channels:
            raise UsageError(f"expected {self.in_channels} channels, got {x.shape[1]}")
        if self.policy == "mix" and self.in_channels > 1:
            x = x.mean(axis=1, keepdims=True)
        if last:
            if self.finished:
                return np.zeros((0, self.out_channels), np.float32)
            self.finished = True
        if self._rs is None:
            return np.ascontiguousarray(x)
        return self._rs.resample_chunk(np.ascontiguousarray(x), last=last).reshape(-1, self.out_channels)


class Pipeline:
    """Audio blocks in, timeline events out (:mod:`streamer.events`: windows, segments, alerts).

    The pipeline knows nothing of the network: whoever starts a stream builds its hello from the
    pipeline's facts (:attr:`labels`, :attr:`sample_rate`, :attr:`window_s`, :attr:`hop_s`,
    :attr:`channel_names`, :attr:`model_info`) with :meth:`streamer.events.Hello.of`.

    Args:
        meta: the model's metadata (features, gate, normalisation, labels).
        classifier: the TFLite classifier (shared between pipelines is fine).
        in_rate, in_channels: the source's format.
        channels: ``mix`` or ``split``.
        channel_names: names of the output channels (split) or of the mix.
        alert_rules: alert rules for the timeline.
        timeline: smoothing and segmentation parameters.
    """

    def __init__(self, meta: ModelMeta, classifier: Classifier, *, in_rate: int, in_channels: int,
                 channels: str = "mix", channel_names: list[str] | None = None,
                 alert_rules: list | None = None, timeline: TimelineConfig | None = None):
        self.meta = meta
        self.classifier = classifier
        self.conditioner = Conditioner(in_rate, in_channels, meta.features.sample_rate, channels)
        n = self.conditioner.out_channels
        if channel_names:
            if len(channel_names) != n:
                raise UsageError(f"{len(channel_names)} channel names given for {n} channel(s)")
            names = list(channel_names)
        else:
            names = ["mix"] if channels == "mix" else [f"ch{i + 1}" for i in range(n)]
        self.channel_names = names
        # a source at 8 kHz or less is telephone-band; above, the analysers listen for it (a call resampled upstream)
        narrow = True if in_rate <= NARROWBAND_MAX_RATE else None
        self.analyzers = [ChannelAnalyzer(meta, narrowband=narrow) for _ in range(n)]
        f = meta.features
        self.timeline = Timeline(meta.labels, names, f.window_frames * f.hop_length / f.sample_rate,
                                 f.hop_frames * f.hop_length / f.sample_rate, timeline, alert_rules)
        self.samples_in = 0  # at the model's rate, per channel
        self.windows_out = 0
        self._finished = False

    @property
    def seconds(self) -> float:
        """Audio analysed so far, in seconds."""
        return self.samples_in / self.meta.features.sample_rate

    @property
    def labels(self) -> list[str]:
        """The model's labels, in output order."""
        return list(self.meta.labels)

    @property
    def sample_rate(self) -> int:
        """The rate windows are analysed at (the model's), in Hz."""
        return int(self.meta.features.sample_rate)

    @property
    def window_s(self) -> float:
        """A window's length in seconds."""
        return self.timeline.window_s

    @property
    def hop_s(self) -> float:
        """Seconds between window starts."""
        return self.timeline.hop_s

    @property
    def model_info(self) -> dict[str, str]:
        """``{"name", "version"}`` of the model."""
        return {"name": self.meta.name, "version": self.meta.version}

    def condition(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        """Source-format block -> model-rate block [m, out_channels]."""
        return self.conditioner(block, last=last)

    def feed(self, block: np.ndarray) -> Events:
        """Source-format block [n, in_channels] -> events."""
        return self.analyse(self.condition(block))

    def analyse(self, block: np.ndarray) -> Events:
        """Model-rate block [m, out_channels] -> events."""
        self.samples_in += len(block)
        parts = [a.push(block[:, i]) for i, a in enumerate(self.analyzers)]
        return self._classify(parts)

    def finish(self) -> Events:
        """End of stream: the resampler's tail, a final window over the tail, closing segments."""
        if self._finished:
            return []
        self._finished = True
        out: Events = []
        if not self.conditioner.finished:
            out.extend(self.analyse(self.conditioner(np.zeros((0, self.conditioner.in_channels), np.float32), last=True)))
        out.extend(self._classify([a.flush() for a in self.analyzers]))
        out.extend(self.timeline.finish())
        return out

    def _classify(self, parts: list[Windows]) -> Events:
        f = self.meta.features
        sec = f.hop_length / f.sample_rate
        scored = classify_windows(self.classifier, parts, self.meta.gate.min_fraction, len(self.meta.labels))
        todo = [(ch, p.starts, speech, probs, p.frames, p.pause, self.analyzers[ch].bands(p))
                for ch, (p, (speech, probs)) in enumerate(zip(parts, scored)) if len(p.starts)]
        events: list[tuple[float, int, Events]] = []
        for ch, starts, speech, probs, wf, pause, bands in todo:
            for i, s in enumerate(starts):
                t0 = float(s) * sec
                evs = self.timeline.add(ch, t0, t0 + wf * sec, bool(speech[i]), probs[i] if speech[i] else None,
                                        pause_s=float(pause[i]) if pause is not None else 0.0,
                                        band=bands[i] if bands is not None else None)
                events.append((t0, ch, evs))
                self.windows_out += 1
        events.sort(key=lambda e: (e[0], e[1]))
        return [ev for _, _, evs in events for ev in evs]


def make_pipeline_factory(meta: ModelMeta, classifier: Classifier, *, channels: str = "mix",
                          channel_names: list[str] | None = None, alert_rules: list | None = None
                          ) -> Callable[[int, int], Pipeline]:
    """A (sample_rate, channels) -> Pipeline factory sharing one model (a server's ingest streams).

    Channel names are used when their count fits the stream (an ingest stream may be mono while
    the names were given for stereo); otherwise the defaults (``mix``, ``ch1``...) apply.
    """

    def factory(rate: int, in_channels: int) -> Pipeline:
        out = 1 if channels == "mix" else in_channels
        names = channel_names if channel_names and len(channel_names) == out else None
        return Pipeline(meta, classifier, in_rate=rate, in_channels=in_channels, channels=channels,
                        channel_names=names, alert_rules=alert_rules)
    return factory


@dataclass
class RunStats:
    """What a run did: audio seconds, wall seconds, overruns, warnings."""

    audio_s: float = 0.0
    wall_s: float = 0.0
    windows: int = 0
    overruns: int = 0
    dropped_frames: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def realtime_factor(self) -> float:
        """Audio seconds per wall second (x real time)."""
        return self.audio_s / self.wall_s if self.wall_s > 0 else float("inf")


def run(source: Source, pipeline: Pipeline, on_events: Callable[[Events], None], *,
        realtime: bool = False, stop: threading.Event | None = None, block_s: float | None = None,
        ring_s: float = 60.0, progress: Callable[[float], None] | None = None) -> RunStats:
    """Drive a pull source through the pipeline; blocks until the source ends or ``stop`` is set.

    A producer thread reads and conditions audio into a fixed ring buffer; this thread analyses
    it. A file waits for room in the ring (nothing lost); a live source overwrites and the ring
    counts the overrun. ``realtime`` paces a file as if it were live. ``on_events`` gets each batch
    of events, in order, including the final segments (but no ``end`` message).
    """
    stop = stop or threading.Event()
    sr = pipeline.meta.features.sample_rate
    live = source.live or realtime
    if block_s is None:
        # live: one feature hop per block, so a window is analysed as soon as its last frame is
        # complete; files: large blocks amortise per-call overhead
        block_s = pipeline.meta.features.hop_length / sr if live else 10.0
    in_block = max(1, int(block_s * source.sample_rate))
    ring = RingBuffer(int(ring_s * sr), pipeline.conditioner.out_channels, overwrite=live)
    errors: list[BaseException] = []
    t_start = time.perf_counter()

    def produce() -> None:
        sent = 0
        try:
            while not stop.is_set():
                blk = source.read(in_block)
                if len(blk) == 0:
                    tail = pipeline.condition(np.zeros((0, source.channels), np.float32), last=True)
                    if len(tail):
                        ring.write(tail)
                    break
                if realtime and not source.live:
                    sent += len(blk)
                    ahead = sent / source.sample_rate - (time.perf_counter() - t_start)
                    if ahead > 0:
                        stop.wait(ahead)
                if not ring.write(pipeline.condition(blk)):
                    break
        except BaseException as exc:  # handed to the consumer, which raises it in the caller
            errors.append(exc)
        finally:
            ring.close()

    producer = threading.Thread(target=produce, name=f"emostream-read-{source.uri}", daemon=True)
    producer.start()
    read_n = max(1, int(block_s * sr))
    try:
        while not stop.is_set():
            # live: take whatever has arrived (never wait for more); files: wait for a full block
            blk = ring.read(read_n if not live else 4 * read_n, timeout=0.5, min_frames=1 if live else read_n)
            if blk is None:
                break
            if len(blk) == 0:
                continue
            evs = pipeline.analyse(blk)
            if evs:
                on_events(evs)
            if progress is not None:
                progress(pipeline.seconds)
    finally:
        ring.close()
        producer.join(timeout=5)
    if errors:
        raise errors[0]
    evs = pipeline.finish()
    if evs:
        on_events(evs)
    return RunStats(audio_s=pipeline.seconds, wall_s=time.perf_counter() - t_start,
                    windows=pipeline.windows_out, overruns=ring.overruns,
                    dropped_frames=ring.dropped_frames, warnings=list(source.warnings))
