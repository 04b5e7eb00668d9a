"""emostream: real-time speech emotion recognition for live and long audio.

The Python API (the objects the command line uses)::

    import streamer

    model = streamer.load_model()                       # the shipped model, or a path
    tl = streamer.label("call.wav", channels="split", channel_names=["agent", "customer"],
                        alerts=["customer:angry>10"], model=model)
    tl.windows, tl.segments, tl.alerts                  # typed events (streamer.events)
    tl.to_dict()                                        # == `emostream label -f json call.wav`
    tl.write("call.vtt")                                # any export format
    for event in streamer.stream("call.wav"): ...       # a file, "mic", an array or async PCM blocks

Everything is imported on first use, so ``import streamer`` stays quick.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself is not imported: `import streamer` stays a few milliseconds
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_model", "label", "stream", "Model", "Timeline", "EmostreamError"]

if TYPE_CHECKING:
    from streamer.api import EventStream, Model, Timeline
    from streamer.errors import EmostreamError


def load_model(path: Any = None) -> "Model":
    """The model at a ``.tflite`` path (its ``.json`` beside it), or the shipped one (None).

    Raises:
        streamer.errors.ModelError: missing or unreadable model or metadata.
    """
    from streamer.api import load_model as _load

    return _load(path)


def label(path_or_array: Any, sample_rate: int | None = None, channels: str = "mix",
          channel_names: Any = None, alerts: Any = (), model: Any = None) -> "Timeline":
    """The emotion timeline of a recording: a path, or a numpy array with its ``sample_rate``.

    See :func:`streamer.api.label`.
    """
    from streamer.api import label as _label

    return _label(path_or_array, sample_rate=sample_rate, channels=channels, channel_names=channel_names,
                  alerts=alerts, model=model)


def stream(source: Any, model: Any = None, **options: Any) -> "EventStream":
    """Events as a file, a microphone (``"mic"``), an array or an async iterator of PCM blocks is analysed.

    See :func:`streamer.api.stream` for the options.
    """
    from streamer.api import stream as _stream

    return _stream(source, model, **options)


def __getattr__(name: str) -> Any:
    # classes on first use (PEP 562), so `import streamer` loads nothing heavy
    if name in ("Model", "Timeline", "EventStream"):
        from streamer import api

        return getattr(api, name)
    if name == "EmostreamError":
        from streamer.errors import EmostreamError

        return EmostreamError
    raise AttributeError(f"module 'streamer' has no attribute {name!r}")
