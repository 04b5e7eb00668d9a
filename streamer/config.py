"""Model metadata: every parameter the streamer needs, read from the model's JSON file.

The same objects configure training (tools/) and streaming, so a feature parameter is written in
exactly one place: the model's metadata.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from streamer.errors import ModelError

__all__ = [
    "FeatureConfig",
    "GateConfig",
    "SpeechConfig",
    "gate_dict",
    "NormConfig",
    "NARROWBAND_MAX_RATE",
    "BAND_DETECT_FRAMES",
    "ModelMeta",
    "default_model_path",
    "load_meta",
]

# sources sampled at this rate or below are telephone-band: the model's narrowband prior applies
NARROWBAND_MAX_RATE = 8000
# a source above that rate switches to the narrowband prior when its first this many speech frames
# have nothing above 4 kHz (streamer.bandwidth: a call resampled upstream)
BAND_DETECT_FRAMES = 50

DEFAULT_LABELS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]


@dataclass(frozen=True)
class FeatureConfig:
    """Frame and window parameters of the MFCC-means features.

    A frame is ``n_fft`` samples every ``hop_length`` samples (no centre padding, so a stream can be
    framed block by block). A model step is the mean of ``sub_window_frames`` consecutive frames; a
    window is ``window_s`` seconds of steps, one window every ``hop_s`` seconds. With ``pitch`` each
    frame also carries two prosody channels after the MFCCs: log2 of the fundamental frequency and
    the voicing strength (see :mod:`streamer.features`).
    """

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 320
    n_mels: int = 64
    n_mfcc: int = 40
    fmin: float = 0.0
    fmax: float | None = None
    sub_window_frames: int = 1
    window_s: float = 3.0
    hop_s: float = 1.0
    pitch: bool = False

    @property
    def n_channels(self) -> int:
        """Features per frame: the MFCCs, plus log-f0 and voicing strength with ``pitch``."""
        return self.n_mfcc + (2 if self.pitch else 0)

    @property
    def frame_rate(self) -> float:
        """Frames per second."""
        return self.sample_rate / self.hop_length

    @property
    def window_frames(self) -> int:
        """Frames in one window, rounded down to a whole number of sub-windows."""
        k = self.sub_window_frames
        return max(k, int(round(self.window_s * self.frame_rate)) // k * k)

    @property
    def hop_frames(self) -> int:
        """Frames between window starts (at least one)."""
        return max(1, int(round(self.hop_s * self.frame_rate)))

    @property
    def window_steps(self) -> int:
        """Model time steps per window."""
        return self.window_frames // self.sub_window_frames

    def validate(self) -> None:
        """Raise ModelError for parameters that cannot work together."""
        if self.sample_rate < 4000 or self.n_fft < 16 or self.hop_length < 1:
            raise ModelError(f"bad feature parameters: {self}")
        if self.n_mfcc > self.n_mels:
            raise ModelError("n_mfcc must not exceed n_mels")
        if self.sub_window_frames < 1 or self.window_s <= 0 or self.hop_s <= 0:
            raise ModelError("window_s, hop_s and sub_window_frames must be positive")


@dataclass(frozen=True)
class GateConfig:
    """Energy speech gate: a frame is speech if its level is above both floors.

    ``abs_db`` is an absolute floor in dBFS; ``rel_db`` is how far below the stream's recent peak a
    frame may be and still count; a window is speech when at least ``min_fraction`` of its frames are.
    """

    abs_db: float = -50.0
    rel_db: float = 35.0
    peak_decay_db_per_s: float = 1.0
    min_fraction: float = 0.2
    detector: "SpeechConfig | None" = None

    def __post_init__(self) -> None:
        # the metadata gives the detector as a JSON object; keep a typed (hashable) copy
        d = self.detector
        if isinstance(d, dict):
            object.__setattr__(self, "detector", SpeechConfig.from_dict(d))
        elif d is not None and not isinstance(d, SpeechConfig):
            raise ValueError(f"gate.detector must be an object, not {type(d).__name__}")


@dataclass(frozen=True)
class SpeechConfig:
    """A learned speech/non-speech detector that judges each window the energy gate lets through.

    ``model`` is a TFLite file beside the emotion model; it takes ``inputs`` (the name of a window's
    input defined in :mod:`streamer.speech`: ``summary-v1``, a summary of the window, or
    ``frames-v1``, its frames) and outputs the probability of speech. A window is
    speech when at least ``min_fraction`` of its frames pass the energy gate (this replaces the
    gate's own ``min_fraction``: a short utterance in a window is the head's to judge) and that
    probability is at least ``threshold``.
    ``features`` are the frame-feature parameters it was trained on: they must equal the model's.
    ``figures`` are its measured figures (shown by ``emostream info``), ``command`` the tool run
    that trained and measured it.
    """

    kind: str = "head"
    model: str = "speech.tflite"
    inputs: str = "summary-v1"
    threshold: float = 0.5
    min_fraction: float = 0.1
    features: tuple[tuple[str, Any], ...] = ()
    figures: tuple[tuple[str, Any], ...] = ()
    command: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SpeechConfig":
        """Build from the metadata's ``gate.detector`` object."""
        d = dict(d)
        for k in ("features", "figures"):
            v = d.get(k) or {}
            if not isinstance(v, dict):
                raise ValueError(f"gate.detector.{k} must be an object")
            d[k] = tuple((str(a), _freeze(b)) for a, b in v.items())
        return _pick(cls, d)

    #: the frame parameters a head depends on: it must run on the frames it was trained on
    FEATURE_KEYS: ClassVar[tuple[str, ...]] = ("sample_rate", "n_fft", "hop_length", "n_mels", "n_mfcc",
                                               "fmin", "fmax", "pitch")
    #: what a head on frame sequences also depends on: the rate of its frames (any window length runs)
    SEQUENCE_KEYS: ClassVar[tuple[str, ...]] = ("sub_window_frames",)
    KINDS: ClassVar[dict[str, tuple[str, ...]]] = {"head": ("summary-v1", "frames-v1")}

    def validate(self, features: FeatureConfig, model_path: Path | None) -> None:
        """Raise ModelError unless this detector can run with ``features`` (and its file is there)."""
        if self.inputs not in self.KINDS.get(self.kind, ()):
            raise ModelError(f"unknown speech detector {self.kind!r} with inputs {self.inputs!r}")
        want = dict(self.features)
        diff = [k for k in self.FEATURE_KEYS + self.SEQUENCE_KEYS if k in want and want[k] != getattr(features, k)]
        if diff:
            raise ModelError(f"speech detector was trained on other frame features ({', '.join(diff)}): "
                             "retrain it with python -m tools.train_speech")
        if model_path is not None and not self.path(model_path).exists():
            raise ModelError(f"speech detector not found: {self.path(model_path)}")

    def path(self, model_path: Path) -> Path:
        """The detector's file: beside the emotion model."""
        return Path(model_path).parent / self.model

    def to_dict(self) -> dict[str, Any]:
        """The ``gate.detector`` object as written to the metadata."""
        d = asdict(self)
        d["features"] = {k: _thaw(v) for k, v in self.features}
        d["figures"] = {k: _thaw(v) for k, v in self.figures}
        return d


def _freeze(v: Any) -> Any:
    if isinstance(v, dict):
        return tuple((str(a), _freeze(b)) for a, b in v.items())
    if isinstance(v, list):
        return tuple(_freeze(b) for b in v)
    return v


def _thaw(v: Any) -> Any:
    if isinstance(v, tuple) and all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in v) and v:
        return {a: _thaw(b) for a, b in v}
    if isinstance(v, tuple):
        return [_thaw(b) for b in v]
    return v


@dataclass(frozen=True)
class NormConfig:
    """Per-band normalisation of frame features.

    kind: ``none``; ``fixed`` (z-score with ``mean``/``std``); ``running`` (per stream: statistics
    over the stream's speech frames so far, starting from ``mean``/``std`` weighted as
    ``prior_frames`` frames); ``running_mean`` (the running mean of ``running``, i.e. cepstral mean
    normalisation per stream, divided by the fixed ``std``). ``prior_frames`` is one weight for
    every band or one per band (a band whose prior weighs less follows the stream sooner).
    ``narrowband_mean``/``narrowband_std``: the prior for sources sampled at
    :data:`NARROWBAND_MAX_RATE` or less (telephone audio: its bands above 4 kHz are empty, so its
    spectral shape sits far from wideband speech's until the stream's own statistics take over).
    """

    kind: str = "none"
    mean: list[float] | None = None
    std: list[float] | None = None
    prior_frames: float | list[float] = 100.0
    min_std: float = 1e-3
    narrowband_mean: list[float] | None = None
    narrowband_std: list[float] | None = None


@dataclass
class ModelMeta:
    """Everything in ``emotion.json``: labels, features, gate, normalisation, provenance."""

    name: str
    version: str
    labels: list[str]
    features: FeatureConfig
    gate: GateConfig = field(default_factory=GateConfig)
    normalisation: NormConfig = field(default_factory=NormConfig)
    input_layout: str = "steps"
    # temperature scaling of the network's probabilities (fitted on CV predictions; 1: as trained)
    temperature: float = 1.0
    model_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def with_window(self, window_s: float | None = None, hop_s: float | None = None) -> "ModelMeta":
        """A copy with the window length or hop overridden (None keeps the model's)."""
        f = self.features
        f = replace(f, window_s=window_s or f.window_s, hop_s=hop_s or f.hop_s)
        f.validate()
        return replace(self, features=f)

    def to_dict(self) -> dict[str, Any]:
        """The metadata as it is written to ``emotion.json``."""
        d = dict(self.extra)
        d.update(
            name=self.name,
            version=self.version,
            labels=list(self.labels),
            features=asdict(self.features),
            gate=gate_dict(self.gate),
            normalisation={k: v for k, v in asdict(self.normalisation).items()
                           if v is not None or not k.startswith("narrowband_")},
            input_layout=self.input_layout,
        )
        if self.temperature != 1.0:
            d["temperature"] = self.temperature
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], model_path: Path | None = None) -> "ModelMeta":
        """Build from a parsed ``emotion.json``; unknown keys are kept in ``extra``."""
        try:
            feats = _pick(FeatureConfig, d.get("features", {}))
            feats.validate()
            meta = cls(
                name=str(d.get("name", "model")),
                version=str(d.get("version", "0")),
                labels=list(d.get("labels") or DEFAULT_LABELS),
                features=feats,
                gate=_pick(GateConfig, d.get("gate", {})),
                normalisation=_pick(NormConfig, d.get("normalisation", {})),
                input_layout=str(d.get("input_layout", "steps")),
                temperature=float(d.get("temperature", 1.0)),
                model_path=model_path,
                extra={k: v for k, v in d.items() if k not in _KNOWN},
            )
        except (TypeError, ValueError) as exc:
            raise ModelError(f"bad model metadata: {exc}") from None
        if meta.normalisation.kind not in ("none", "fixed", "running", "running_mean"):
            raise ModelError(f"unknown normalisation kind {meta.normalisation.kind!r}")
        nm = meta.normalisation
        for key in ("narrowband_mean", "narrowband_std"):
            v = getattr(nm, key)
            if v is not None and len(v) != meta.features.n_channels:
                raise ModelError(f"normalisation.{key} has {len(v)} values for {meta.features.n_channels} bands")
        if (nm.narrowband_mean is None) != (nm.narrowband_std is None):
            raise ModelError("normalisation.narrowband_mean and narrowband_std come together")
        pf = meta.normalisation.prior_frames
        if isinstance(pf, list) and len(pf) != meta.features.n_channels:  # refused at load, not mid-stream
            raise ModelError(f"normalisation.prior_frames has {len(pf)} weights for {meta.features.n_channels} bands")
        if not (0.05 <= meta.temperature <= 20.0):
            raise ModelError(f"temperature {meta.temperature} is outside 0.05-20")
        if meta.input_layout not in ("steps", "coefficients"):
            raise ModelError(f"unknown input_layout {meta.input_layout!r}")
        if meta.gate.detector is not None:  # refused at load, not at a stream's first window
            meta.gate.detector.validate(meta.features, model_path)
        return meta


def gate_dict(gate: GateConfig) -> dict[str, Any]:
    """The ``gate`` object as written to the metadata (the detector, if any, as its JSON object)."""
    d = {f.name: getattr(gate, f.name) for f in fields(gate)}
    if gate.detector is None:
        d.pop("detector")
    else:
        d["detector"] = gate.detector.to_dict()
    return d


_KNOWN = {"name", "version", "labels", "features", "gate", "normalisation", "input_layout", "temperature"}


def _pick(cls: type, d: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


def default_model_path() -> Path:
    """The shipped model: ``$EMOSTREAM_MODEL``, else the installed package data, else ``model/``."""
    env = os.environ.get("EMOSTREAM_MODEL")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for cand in (here / "_model" / "emotion.tflite", here.parent / "model" / "emotion.tflite"):
        if cand.exists():
            return cand
    try:
        from importlib.resources import files

        cand = Path(str(files("streamer._model") / "emotion.tflite"))
        if cand.exists():
            return cand
    except (ModuleNotFoundError, TypeError):
        pass
    return here.parent / "model" / "emotion.tflite"


def load_meta(model_path: str | os.PathLike[str] | None = None) -> ModelMeta:
    """Read the metadata that sits beside a ``.tflite`` file (same stem, ``.json``)."""
    path = Path(model_path) if model_path else default_model_path()
    if path.suffix == ".json":
        path = path.with_suffix(".tflite")
    meta_path = path.with_suffix(".json")
    if not path.exists():
        raise ModelError(f"model not found: {path}")
    if not meta_path.exists():
        raise ModelError(f"model metadata not found: {meta_path}")
    try:
        d = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read model metadata {meta_path}: {exc}") from None
    if not isinstance(d, dict):
        raise ModelError(f"model metadata {meta_path} is not a JSON object")
    return ModelMeta.from_dict(d, model_path=path)
