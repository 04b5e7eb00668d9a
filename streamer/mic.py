"""The microphone as a Source: a PortAudio input stream (sounddevice) feeding a ring buffer.

The PortAudio callback runs on a real-time audio thread and does nothing but copy the block into a
:class:`~streamer.ringbuffer.RingBuffer` (which overwrites the oldest audio rather than wait) and
count PortAudio's input-overflow flags. :meth:`MicSource.read` blocks on that ring, so the
microphone fits the pull-source interface that :func:`streamer.pipeline.run` drives from its
producer thread, like a file. The stream runs at the device's own sample rate; the pipeline
resamples.

sounddevice is imported lazily: it loads the PortAudio shared library at import time, and nothing
but the microphone needs it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from streamer.errors import DeviceError
from streamer.ringbuffer import RingBuffer
from streamer.sources import Source

__all__ = ["MicSource", "list_devices", "find_device"]


def _sounddevice() -> Any:
    """Import sounddevice, turning a missing PortAudio library into a DeviceError."""
    try:
        import sounddevice
    except OSError as exc:  # sounddevice raises OSError when libportaudio cannot be loaded
        raise DeviceError(f"PortAudio is not available ({exc}); install it, e.g. "
                          "apt-get install libportaudio2") from None
    except ImportError:
        raise DeviceError("the sounddevice package is not installed: pip install sounddevice") from None
    return sounddevice


def list_devices() -> list[dict[str, Any]]:
    """The audio input devices PortAudio sees.

    Returns:
        one dict per input device: ``index``, ``name``, ``hostapi`` (name), ``channels`` (maximum
        input channels), ``sample_rate`` (the device's default rate) and ``default`` (True for the
        default input device).
    """
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
        default_in = sd.default.device[0]
    except sd.PortAudioError as exc:
        raise DeviceError(f"PortAudio cannot list devices: {exc}") from None
    out = []
    for d in devices:
        if d["max_input_channels"] < 1:
            continue
        out.append({
            "index": int(d["index"]),
            "name": d["name"],
            "hostapi": hostapis[d["hostapi"]]["name"],
            "channels": int(d["max_input_channels"]),
            "sample_rate": float(d["default_samplerate"]),
            "default": int(d["index"]) == default_in,
        })
    return out


def find_device(device: int | str | None) -> dict[str, Any]:
    """The input device for an index, a (part of a) name, or None for the default input.

    A string of digits is taken as an index. A name matches when it is contained in the device's
    name, case-insensitively (as sounddevice does); an exact name wins over partial matches.

    Raises:
        DeviceError: no such input device, or a name that matches several.
    """
    devices = list_devices()
    if not devices:
        raise DeviceError("no audio input device found (PortAudio sees none)")
    if device is None or (isinstance(device, str) and not device.strip()):
        for d in devices:
            if d["default"]:
                return d
        return devices[0]
    if isinstance(device, str) and device.strip().isdigit():
        device = int(device.strip())
    if isinstance(device, int):
        for d in devices:
            if d["index"] == device:
                return d
        raise DeviceError(f"no audio input device with index {device} (see: emostream devices)")
    want = device.strip().lower()
    exact = [d for d in devices if d["name"].lower() == want]
    if exact:
        return exact[0]
    partial = [d for d in devices if want in d["name"].lower()]
    if len(partial) == 1:
        return partial[0]
    if not partial:
        raise DeviceError(f"no audio input device matching {device!r} (see: emostream devices)")
    names = ", ".join(f"{d['index']}: {d['name']}" for d in partial)
    raise DeviceError(f"{device!r} matches several input devices ({names}); give an index")


class MicSource(Source):
    """Live audio from an input device, read in float32 blocks ``[n, channels]``.

    The stream starts when the source is created (so a bad device fails at once) and runs until
    :meth:`close`. Audio waits in a ring of ``buffer_s`` seconds; if nobody reads for longer, the
    oldest audio is dropped and counted, never blocking the audio thread.

    Args:
        device: input device index, name (or part of one), or None for the default input.
        sample_rate: capture rate in Hz; None takes the device's own default rate.
        channels: channels to capture (at most the device's); None takes 1 (mono).
        buffer_s: seconds of audio the ring holds.
        blocksize: frames per PortAudio callback; 0 lets PortAudio choose.
        stall_s: seconds without any audio from a started device after which :meth:`read` raises
            DeviceError (a device that hangs instead of failing); None waits for ever.
        start: start capturing now; with False, the device is opened (so errors show at once) and
            capture begins at :meth:`start` (or the first :meth:`read`).

    Attributes:
        overflows: callbacks that PortAudio flagged with an input overflow (audio lost before it
            reached us: the callback was late).
        overruns: times the ring dropped its oldest audio because the reader fell behind.
        dropped_frames: frames the ring dropped.
        device: the device dict of :func:`list_devices`.

    Raises:
        DeviceError: PortAudio or the device is missing, or the stream cannot be opened.
    """

    live = True

    def __init__(self, device: int | str | None = None, sample_rate: int | None = None,
                 channels: int | None = None, buffer_s: float = 10.0, blocksize: int = 0,
                 stall_s: float | None = 5.0, start: bool = True):
        super().__init__()
        sd = _sounddevice()
        self.device = find_device(device)
        self.sample_rate = int(sample_rate or round(self.device["sample_rate"]))
        self.channels = int(channels or 1)
        if self.channels > self.device["channels"]:
            raise DeviceError(f"{self.device['name']} has {self.device['channels']} input channel(s), "
                              f"{self.channels} asked")
        self.uri = f"mic:{self.device['name']}"
        self.duration = None
        self.overflows = 0
        self.frames_captured = 0
        self.stall_s = stall_s
        self._ring = RingBuffer(max(1, int(buffer_s * self.sample_rate)), self.channels, overwrite=True)
        self._lock = threading.Lock()
        self._closed = False
        self._stream_error: str | None = None
        self._sd = sd
        try:
            self._stream = sd.InputStream(device=self.device["index"], samplerate=self.sample_rate,
                                          channels=self.channels, dtype="float32", blocksize=blocksize,
                                          callback=self._callback, finished_callback=self._finished)
        except (sd.PortAudioError, ValueError) as exc:
            self._ring.close()
            raise DeviceError(f"cannot open input device {self.device['name']!r} at "
                              f"{self.sample_rate} Hz: {exc}") from None
        if start:
            self.start()

    def start(self) -> None:
        """Begin capturing (done by the constructor unless ``start=False``); safe to call twice."""
        with self._lock:
            if self._closed or self._stream.active:
                return
            try:
                self._stream.start()
            except self._sd.PortAudioError as exc:
                raise DeviceError(f"cannot start input device {self.device['name']!r}: {exc}") from None

    def _callback(self, indata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        # The audio thread: copy and count, nothing else (no waiting, no I/O, no logging).
        if status.input_overflow:
            self.overflows += 1
        self.frames_captured += frames
        self._ring.write(indata)

    def _finished(self) -> None:
        # PortAudio calls this when the stream stops, also when the device goes away.
        if not self._closed:
            self._stream_error = "the input stream stopped (device unplugged or failed)"
            self.warnings.append(f"{self.uri}: {self._stream_error}")
        self._ring.close()

    @property
    def overruns(self) -> int:
        return self._ring.overruns

    @property
    def dropped_frames(self) -> int:
        return self._ring.dropped_frames

    def stats(self) -> dict[str, Any]:
        """Capture health, for a server to report in the stream."""
        return {"device": self.device["name"], "sample_rate": self.sample_rate, "channels": self.channels,
                "frames_captured": self.frames_captured, "overflows": self.overflows,
                "overruns": self.overruns, "dropped_frames": self.dropped_frames}

    def read(self, max_frames: int, min_frames: int | None = None) -> np.ndarray:
        """Block until audio is there; up to ``max_frames`` float32 frames ``[n, channels]``.

        Waits for ``min_frames`` (default: ``max_frames``, at most 50 ms of audio) so that a
        reader gets blocks of a useful size. Returns an empty block only once the source is closed
        (or the device stopped) and the ring is drained.
        """
        max_frames = max(1, int(max_frames))
        if not self._closed and not self._stream.active and not self._ring.closed:
            self.start()
        if min_frames is None:
            min_frames = min(max_frames, max(1, self.sample_rate // 20))
        seen, since = self.frames_captured, time.monotonic()
        while True:
            blk = self._ring.read(max_frames, timeout=0.5, min_frames=min(min_frames, max_frames))
            if blk is None:
                return np.zeros((0, self.channels), np.float32)
            if len(blk):
                return blk
            if self.frames_captured != seen:
                seen, since = self.frames_captured, time.monotonic()
            elif self.stall_s and time.monotonic() - since > self.stall_s:
                raise DeviceError(f"{self.device['name']!r} delivered no audio for {self.stall_s:g} s "
                                  "(device stalled or taken away)")

    def close(self) -> None:
        """Stop the stream and wake any reader; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._stream.close(ignore_errors=True)
        finally:
            self._ring.close()
