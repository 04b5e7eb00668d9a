"""`emostream info`: model, labels, feature parameters and runtime."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from typing import Any

from streamer.cli.args import add_model
from streamer.config import BAND_DETECT_FRAMES, NARROWBAND_MAX_RATE


def configure(p: argparse.ArgumentParser) -> None:
    """The options of `info`."""
    add_model(p)
    p.add_argument("--json", action="store_true")


# keys of the model's metadata that describe the machine it was trained on, not the model
_PRIVATE_KEYS = {"command", "commands", "cwd", "host", "hostname", "user", "data_dir", "cache_dir"}
# an absolute path (POSIX, home, Windows) inside a text: only its last part is shown
_ABS_PATH = re.compile(r"(?<![\w.:/])(?:~|[A-Za-z]:\\|/)[^\s,;'\"()\[\]]*")


# options of a training command that say where one run kept its files or which folds it ran, not
# what was measured: left out of the command `info` shows for reproducing a figure
_RUN_OPTIONS = {"--data", "--reports", "--out", "--cache", "--tag", "--save-probs", "--folds", "--threads"}
_RUN_FLAGS = {"--no-curve"}


def reproduce(command: str | None) -> str | None:
    """The command that measures a figure again, from the one recorded with it: the first run of a
    merged CV (``tools.cv_merge <run> <run>``), without the run's own paths, folds and threads."""
    if not command:
        return None
    runs = re.findall(r"<([^<>]*)>", command)
    command = runs[0] if command.startswith("python -m tools.cv_merge") and runs else command
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    out: list[str] = []
    skip = False
    for w in words:
        if skip:
            skip = False
            continue
        name = w.split("=", 1)[0]
        if name in _RUN_OPTIONS:
            skip = "=" not in w
            continue
        if w in _RUN_FLAGS:
            continue
        out.append(_public(w))
    return " ".join(out)


def _public(value: Any) -> Any:
    """The metadata without the training machine's paths and commands."""
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items() if k not in _PRIVATE_KEYS}
    if isinstance(value, list):
        return [_public(v) for v in value]
    if isinstance(value, str):
        return _ABS_PATH.sub(lambda m: m.group(0).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or "/", value)
    return value


def _norm_text(meta: Any) -> str:
    """The normalisation and its prior weights, runs of bands with one weight named by their ends."""
    n = meta.normalisation
    if n.kind not in ("running", "running_mean"):
        return n.kind
    # telephone audio starts from its own prior where the model has one
    tel = (f"; sources at {NARROWBAND_MAX_RATE // 1000} kHz or less start from a telephone-band prior, "
           f"others switch to it after {BAND_DETECT_FRAMES * meta.features.hop_length / meta.features.sample_rate:g} s "
           "of speech with nothing above 4 kHz" if n.narrowband_mean is not None else "")
    if not isinstance(n.prior_frames, (list, tuple)):
        return f"{n.kind}, prior {n.prior_frames:g} frames{tel}"
    f = meta.features
    names = [f"c{i}" for i in range(f.n_mfcc)] + (["log-f0", "voicing"] if f.pitch else [])
    runs: list[tuple[float, list[str]]] = []
    for name, w in zip(names, n.prior_frames):
        if runs and runs[-1][0] == w:
            runs[-1][1].append(name)
        else:
            runs.append((w, [name]))
    by: dict[float, list[str]] = {}
    for w, band in runs:
        by.setdefault(w, []).append(band[0] if len(band) == 1 else f"{band[0]}-{band[-1]}")
    return f"{n.kind}, prior " + "; ".join(f"{w:g} frames on {', '.join(b)}" for w, b in by.items()) + tel


def run(args: argparse.Namespace) -> int:
    """Model, labels, feature parameters and the TFLite runtime in use."""
    from dataclasses import asdict

    from streamer.classifier import runtime_name
    from streamer.config import gate_dict, load_meta
    from streamer.speech import describe

    meta = load_meta(args.model)
    info = {
        "model": str(meta.model_path),
        "name": meta.name,
        "version": meta.version,
        "labels": meta.labels,
        "features": asdict(meta.features),
        "window_frames": meta.features.window_frames,
        "normalisation": meta.normalisation.kind,
        "normalisation_prior_frames": meta.normalisation.prior_frames,
        "gate": gate_dict(meta.gate),
        "runtime": runtime_name(),
        "evaluation": _with_commands(meta.extra.get("evaluation")),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"model      {info['model']}")
    print(f"name       {meta.name} {meta.version}")
    print(f"labels     {', '.join(meta.labels)}")
    f = meta.features
    print(f"features   {f.n_mfcc} MFCC of {f.n_mels} mels{' + log-f0, voicing' if f.pitch else ''}, {f.sample_rate} Hz, frame {f.n_fft}, hop {f.hop_length}, "
          f"{f.sub_window_frames}-frame means, window {f.window_s} s every {f.hop_s} s")
    print(f"normalise  {_norm_text(meta)}")
    for line in describe(meta):
        print(f"speech     {line}")
    print(f"runtime    {info['runtime']}")
    ev = info["evaluation"]
    shown = None
    if isinstance(ev, dict):
        for k, v in ev.items():
            if isinstance(v, (int, float, str)):
                print(f"eval       {k}: {v}")
            elif isinstance(v, dict) and "accuracy" in v:  # a test condition: its headline figures
                if v.get("reproduce") and v["reproduce"] != shown:
                    shown = v["reproduce"]
                    print(f"eval       measured by: {shown}")
                f1 = f", macro-F1 {v['macro_f1']}" if "macro_f1" in v else ""
                print(f"eval       {k}: accuracy {v['accuracy']}{f1}")
            elif k == "calibration" and isinstance(v, dict) and "temperature" in v:
                print(f"eval       calibration: temperature {v['temperature']}, expected calibration error "
                      f"{v.get('ece')} before, {v.get('ece_after')} after")
    return 0


def _with_commands(ev: Any) -> Any:
    """The public evaluation block, each test condition with the command that measures it again
    (``reproduce``): its own report's, else that of the condition before it (a protocol's continuous
    figures follow its per-clip ones), else the headline CV's."""
    if not isinstance(ev, dict):
        return _public(ev)
    out = _public(ev)
    current = reproduce(ev.get("command"))
    for k, v in ev.items():
        if isinstance(v, dict) and "accuracy" in v:
            current = reproduce(v.get("command")) or current
            if current:
                out[k] = {**out[k], "reproduce": current}
    return out
