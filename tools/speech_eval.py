"""Measure speech detectors on the labelled set of tools/speech_set.py, window by window.

Every stream goes through the streamer's own chain (resampling to the model's rate, frame features,
energy gate, the detector's window inputs of :mod:`streamer.speech`), and beside it through the
library candidates: webrtcvad (modes 0-3, on 30 ms frames) and Silero VAD (its ONNX model, 32 ms
chunks). Per window it keeps the head's input, the energy gate's fraction, each library's fraction of
speech frames and the true seconds of speech; cached under cache/speech/ (nothing in the repository).

    python -m tools.speech_eval --split measure                  # the candidates' table (non-speech of family b)
    python -m tools.speech_eval --split measure --families c     # on the third generator family
    python -m tools.speech_eval --split measure --head model/emotion.json   # and the model's head
    python -m tools.speech_eval --cost                           # detector cost per window vs the chain

Figures: non-speech windows rejected (all, per kind, 16 kHz / 8 kHz mu-law) and speech time kept
(windows with at least ``min_fraction`` of a window of speech, weighted by their seconds of speech; per
condition: clean, noisy 0-20 dB SNR, 8 kHz mu-law, both).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np


from streamer.config import FeatureConfig, ModelMeta, load_meta
from streamer.features import frame_features
from streamer.gate import SpeechGate
from streamer import speech
from streamer.speech import FRAMES, DetectorInputs
from tools import music_a, nonspeech_other, nonspeech_third, speech_set

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "cache" / "speech"
WEBRTC_MODES = (0, 1, 2, 3)
_VERSION = 5  # bump when what is cached changes


def _window_spans(starts: np.ndarray, frames: int, f: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Seconds from the first frame's start to the last frame's end of each window."""
    t0 = starts * f.hop_length / f.sample_rate
    return t0, t0 + ((frames - 1) * f.hop_length + f.n_fft) / f.sample_rate


def _fraction_in(t0: np.ndarray, t1: np.ndarray, centres: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Fraction of the flagged frames (by centre time) among the frames of each window."""
    c = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    a = np.searchsorted(centres, t0)
    b = np.searchsorted(centres, t1)
    return (c[b] - c[a]) / np.maximum(b - a, 1)


def webrtc_flags(y: np.ndarray, mode: int, sr: int = 16000) -> tuple[np.ndarray, np.ndarray]:
    """webrtcvad's verdict on each 30 ms frame (centre times, flags)."""
    import webrtcvad

    vad = webrtcvad.Vad(mode)
    n = int(0.03 * sr)
    pcm = (np.clip(y, -1, 1) * 32767).astype("<i2").tobytes()
    m = len(y) // n
    flags = np.array([vad.is_speech(pcm[2 * i * n : 2 * (i + 1) * n], sr) for i in range(m)], bool)
    return (np.arange(m) + 0.5) * n / sr, flags


class Silero:
    """Silero VAD through onnxruntime (the ONNX file inside the silero-vad package; no torch)."""

    def __init__(self) -> None:
        import importlib.util

        import onnxruntime

        spec = importlib.util.find_spec("silero_vad")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("silero-vad is not installed (pip install --no-deps silero-vad onnxruntime)")
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / "silero_vad.onnx"
        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = opts.intra_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), sess_options=opts,
                                                    providers=["CPUExecutionProvider"])

    def __call__(self, y: np.ndarray, sr: int = 16000) -> tuple[np.ndarray, np.ndarray]:
        """Speech probability of each 512-sample chunk (centre times, probabilities)."""
        state = np.zeros((2, 1, 128), np.float32)
        ctx = np.zeros((1, 64), np.float32)
        m = len(y) // 512
        p = np.zeros(m, np.float32)
        srt = np.array(sr, np.int64)
        for i in range(m):
            x = np.concatenate([ctx, y[None, i * 512 : (i + 1) * 512].astype(np.float32)], axis=1)
            out, state = self.session.run(None, {"input": x, "state": state, "sr": srt})
            p[i] = float(out.reshape(-1)[0])
            ctx = x[:, -64:]
        return (np.arange(m) + 0.5) * 512 / sr, p


def stream_windows(y: np.ndarray, meta: ModelMeta, inputs: str = FRAMES) -> tuple[np.ndarray, ...]:
    """The chain's windows of a model-rate signal as a detector on ``inputs`` sees them: starts, head
    inputs, frames per window (the short final window's as the streamer cuts it) and the share of each
    window's frames the energy gate passes."""
    f = meta.features
    feats, level = frame_features(y, f)
    flags = SpeechGate(meta.gate, f)(level)
    di = DetectorInputs(inputs, f)
    starts, x = di.push(feats, level, flags)
    s2, x2, wf2 = di.flush()
    frames = np.full(len(starts), f.window_frames)
    if len(s2):
        starts, x = np.concatenate([starts, s2]), np.concatenate([x, x2])
        frames = np.concatenate([frames, [wf2]])
    gated = np.array([flags[a : a + n].mean() for a, n in zip(starts, frames)], np.float32)
    return starts, x, frames, gated


def _key(meta: ModelMeta, split: str, per_kind: int, libs: bool, noisy: int = 1, families: str | None = None,
         inputs: str = FRAMES, mixtures: int = 0) -> str:
    """Cache key: everything the cached arrays depend on (the set's and the detector inputs' code too;
    the libraries' columns, ``libs``, depend on the set and the window layout only)."""
    import inspect

    code = b"".join(Path(m.__file__).read_bytes() for m in (speech_set, music_a, nonspeech_other, nonspeech_third))
    if not libs:
        code += "".join(inspect.getsource(fn) for fn in (speech.frame_rows, speech.summarise, speech._row_width,
                                                          speech.frame_channels, DetectorInputs)).encode()
        code += inputs.encode()
    f = meta.features
    frames = [f.sample_rate, f.n_fft, f.hop_length, f.window_s, f.hop_s, f.sub_window_frames]
    fams = families or speech_set.DEFAULT_FAMILY[split]
    blob = json.dumps([_VERSION, split, per_kind, fams] + ([noisy] if noisy != 1 else []) +
                      ([f"mixtures={mixtures}"] if mixtures else []) + [libs, frames if libs else sorted(vars(f).items()),
                       [] if libs else [meta.gate.abs_db, meta.gate.rel_db, meta.gate.peak_decay_db_per_s],
                       hashlib.sha1(code).hexdigest()], default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def collect(split: str, meta: ModelMeta, per_kind: int = 3, libs: bool = True,
            progress: Callable[[str], None] | None = None, noisy: int = 1,
            families: str | None = None, inputs: str = FRAMES, mixtures: int = 0) -> dict[str, np.ndarray]:
    """Per-window arrays of a split (cached): the head's inputs ``x`` (``frames-v1`` frames as float16),
    energy fraction ``gated``, library fractions, truth."""
    import soxr

    path = CACHE / f"{split}-{_key(meta, split, per_kind, False, noisy, families, inputs, mixtures)}.npz"
    lib_path = CACHE / f"{split}-libs-{_key(meta, split, per_kind, True, noisy, families, mixtures=mixtures)}.npz"
    lib_cols = ("webrtc", "silero", "timing_libs")
    if path.exists() and (not libs or lib_path.exists()):
        with np.load(path) as z:
            out = {k: z[k] for k in z.files}
        if libs:
            with np.load(lib_path) as z:
                out.update({k: z[k] for k in lib_cols})
        return out
    f = meta.features
    if libs and lib_path.exists():  # the libraries' verdicts do not change with the head's inputs
        with np.load(lib_path) as z:
            have = {k: z[k] for k in lib_cols}
        libs = False
    else:
        have = {}
    silero = Silero() if libs else None
    cols: dict[str, list] = {k: [] for k in ("x", "gated", "speech_s", "stream", "kind", "condition", "speaker",
                                             "family", "webrtc", "silero", "seconds")}
    t_lib = {"webrtc": 0.0, "silero": 0.0, "chain": 0.0}
    for si, s in enumerate(speech_set.streams(split, per_kind=per_kind, noisy=noisy, families=families,
                                              mixtures=mixtures)):
        y = s.audio if s.rate == f.sample_rate else soxr.resample(s.audio, s.rate, f.sample_rate, quality="HQ")
        y = np.asarray(y, np.float32)
        t = time.perf_counter()
        starts, x, frames, gated = stream_windows(y, meta, inputs)
        t_lib["chain"] += time.perf_counter() - t
        t0, t1 = _window_spans(starts, frames, f)
        # true speech seconds: frames (by centre) inside an utterance's span
        n_fr = 1 + (len(y) - f.n_fft) // f.hop_length if len(y) >= f.n_fft else 0
        centres = (np.arange(n_fr) * f.hop_length + f.n_fft / 2) / f.sample_rate
        truth = np.zeros(n_fr, bool)
        for a, b in s.spans:
            truth |= (centres >= a) & (centres < b)
        c = np.concatenate([[0], np.cumsum(truth)])
        a_idx = np.searchsorted(centres, t0)
        b_idx = np.searchsorted(centres, t1)
        cols["speech_s"].append((c[b_idx] - c[a_idx]) * f.hop_length / f.sample_rate)
        cols["x"].append(x.astype(np.float16) if inputs == FRAMES else x)  # frames: half the memory
        cols["gated"].append(gated)
        cols["seconds"].append((t1 - t0))
        k = len(starts)
        cols["stream"].append(np.full(k, si))
        cols["kind"].append(np.full(k, s.kind, object))
        cols["condition"].append(np.full(k, s.condition, object))
        cols["speaker"].append(np.full(k, s.speaker, object))
        cols["family"].append(np.full(k, s.family, object))
        if libs:
            t = time.perf_counter()
            w = []
            for mode in WEBRTC_MODES:
                tc, fl = webrtc_flags(y, mode)
                w.append(_fraction_in(t0, t1, tc, fl))
            t_lib["webrtc"] += time.perf_counter() - t
            t = time.perf_counter()
            tc, p = silero(y)
            t_lib["silero"] += time.perf_counter() - t
            cols["webrtc"].append(np.stack(w, axis=1))
            cols["silero"].append(np.stack([_fraction_in(t0, t1, tc, p >= th) for th in (0.3, 0.5, 0.7)], axis=1))
        if progress:
            progress(f"{split} {si}: {s.name} {k} windows")
    out = {k: np.concatenate(v) for k, v in cols.items() if v}
    for k in ("kind", "condition", "speaker", "family"):
        out[k] = out[k].astype(str)
    out["timing"] = np.array([t_lib["chain"]])
    CACHE.mkdir(parents=True, exist_ok=True)
    if libs:
        out["timing_libs"] = np.array([t_lib["webrtc"] / len(WEBRTC_MODES), t_lib["silero"]])
        np.savez_compressed(lib_path, **{k: out.pop(k) for k in lib_cols})
        with np.load(lib_path) as z:
            have = {k: z[k] for k in lib_cols}
    np.savez_compressed(path, **out)
    out.update(have)
    return out


def head_probs(data: dict[str, np.ndarray], model_json: str | os.PathLike[str]) -> np.ndarray:
    """The speech probability a model's head gives each window."""
    meta = load_meta(model_json)
    det = meta.gate.detector
    if det is None:
        raise SystemExit(f"{model_json} names no speech detector")
    return run_head(det.path(meta.model_path), DetectorInputs(det.inputs, meta.features).shape(), data["x"])


def run_head(path: Path, shape: tuple[int, ...], x: np.ndarray, batch: int = 1024) -> np.ndarray:
    """A TFLite head's speech probabilities for windows' inputs ``x``, through the streamer's :class:`SpeechHead`."""
    from streamer.speech import SpeechHead

    head = SpeechHead(path, shape)
    if len(x) == 0:
        return np.zeros(0, np.float32)
    return np.concatenate([head(np.asarray(x[a : a + batch], np.float32)) for a in range(0, len(x), batch)])


def score(data: dict[str, np.ndarray], accept: np.ndarray, min_speech_s: float) -> dict[str, float]:
    """Rejection of non-speech windows and speech time kept, overall and by condition and kind."""
    ns = data["kind"] != "speech"
    sp = (data["kind"] == "speech") & (data["speech_s"] >= min_speech_s)
    pause = (data["kind"] == "speech") & (data["speech_s"] < 0.05)
    out: dict[str, float] = {}
    out["rejected"] = float(1 - accept[ns].mean())
    for cond in ("16k", "8k-mulaw"):
        m = ns & (data["condition"] == cond)
        out[f"rejected {cond}"] = float(1 - accept[m].mean())
    w = data["speech_s"]
    out["kept"] = float((w[sp] * accept[sp]).sum() / w[sp].sum())
    for cond in speech_set.CONDITIONS:
        m = sp & (data["condition"] == cond)
        out[f"kept {cond}"] = float((w[m] * accept[m]).sum() / max(w[m].sum(), 1e-9))
    m = pause & np.char.endswith(data["condition"].astype(str), "noisy")
    out["pauses in noise rejected"] = float(1 - accept[m].mean()) if m.any() else float("nan")
    for kind in speech_set.NONSPEECH:
        m = data["kind"] == kind
        out[f"rejected {kind}"] = float(1 - accept[m].mean())
    return out


def candidates(data: dict[str, np.ndarray], min_fraction: float, head: np.ndarray | None,
               threshold: float, head_min: float = 0.1) -> dict[str, np.ndarray]:
    """Each candidate's window verdicts."""
    energy = data["gated"] >= min_fraction
    c = {"energy gate (1.4.0)": energy}
    if "webrtc" in data:
        for i, mode in enumerate(WEBRTC_MODES):
            c[f"webrtcvad mode {mode}"] = data["webrtc"][:, i] >= min_fraction
        c["energy + webrtcvad 3"] = energy & (data["webrtc"][:, 3] >= min_fraction)
        for i, th in enumerate((0.3, 0.5, 0.7)):
            c[f"silero p>={th}"] = data["silero"][:, i] >= min_fraction
        c["energy + silero 0.5"] = energy & (data["silero"][:, 1] >= min_fraction)
        # the same share of a window the learned head needs: a short utterance counts
        c[f"webrtcvad mode 3, >= {head_min:g} of window"] = data["webrtc"][:, 3] >= head_min
        c[f"silero p>=0.5, >= {head_min:g} of window"] = data["silero"][:, 1] >= head_min
        c[f"silero p>=0.3, >= {head_min:g} of window"] = data["silero"][:, 0] >= head_min
    if head is not None:
        gated = data["gated"] >= head_min
        c[f"energy >= {head_min:g} + head >= {threshold:g}"] = gated & (head >= threshold)
        c[f"energy + head >= {threshold:g}"] = energy & (head >= threshold)
    return c


def table(data: dict[str, np.ndarray], cands: dict[str, np.ndarray], min_speech_s: float) -> str:
    """A Markdown table: one row per candidate."""
    cols = ["rejected", "rejected 16k", "rejected 8k-mulaw", "kept", "kept 16k", "kept 16k-noisy",
            "kept 8k-mulaw", "kept 8k-mulaw-noisy", "pauses in noise rejected"]
    lines = ["| candidate | " + " | ".join(cols) + " | worst non-speech kind |",
             "|---" * (len(cols) + 2) + "|"]
    for name, acc in cands.items():
        s = score(data, acc, min_speech_s)
        worst = min(speech_set.NONSPEECH, key=lambda k: s[f"rejected {k}"])
        lines.append(f"| {name} | " + " | ".join(f"{100 * s[c]:.1f}" for c in cols) +
                     f" | {worst} {100 * s[f'rejected {worst}']:.1f} |")
    return "\n".join(lines)


def cost(meta_path: str | None, seconds: float = 60.0, repeats: int = 3) -> dict[str, float]:
    """Per window: the whole chain's time and the detector's share of it.

    The chain is the streamer's ``Pipeline`` (features, gate, normaliser, windows, classifier,
    timeline) on one speaker's speech, fed as a file is read (10 s blocks) and as a live stream
    arrives (one 20 ms hop a block). The detector's own work (keeping frames, its rows, windows,
    inputs and head, i.e. everything in :class:`SpeechDetector` but the energy gate) is timed
    inside the same run, so the share does not drown in the run-to-run noise of a loaded machine.
    """
    from streamer.classifier import Classifier
    from streamer.pipeline import Pipeline
    from streamer.speech import SpeechDetector

    meta = load_meta(meta_path)
    if meta.gate.detector is None:
        raise SystemExit("the model names no speech detector")
    f = meta.features
    by = speech_set.speech_items()
    y = speech_set.speech_stream(by["ravdess-15"], np.random.default_rng(0), seconds, "16k", "cost").audio
    clf = Classifier(meta=meta)
    spent = {"detector": 0.0, "energy": 0.0}
    originals = {name: getattr(SpeechDetector, name) for name in ("__call__", "judge")}
    energy_call = SpeechGate.__call__

    def timed(fn, key):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[key] += time.perf_counter() - t
        return wrapper

    out: dict[str, float] = {}
    try:
        for name, fn in originals.items():
            setattr(SpeechDetector, name, timed(fn, "detector"))
        SpeechGate.__call__ = timed(energy_call, "energy")
        for mode, block in (("file", 10 * f.sample_rate), ("live", f.hop_length)):
            n = len(y) if mode == "file" else min(len(y), 20 * f.sample_rate)
            best = (np.inf, 0.0, 1)
            for _ in range(repeats):
                spent.update(detector=0.0, energy=0.0)
                pipe = Pipeline(meta, clf, in_rate=f.sample_rate, in_channels=1)
                t = time.perf_counter()
                for a in range(0, n, block):
                    pipe.feed(y[a : a + block, None])
                pipe.finish()
                total = time.perf_counter() - t
                if total < best[0]:
                    best = (total, spent["detector"] - spent["energy"], pipe.windows_out)
            total, det, windows = best
            out[f"{mode}_ms_per_window"] = round(1e3 * total / windows, 3)
            out[f"{mode}_detector_ms_per_window"] = round(1e3 * det / windows, 4)
            out[f"{mode}_share"] = round(det / total, 4)
    finally:
        for name, fn in originals.items():
            setattr(SpeechDetector, name, fn)
        SpeechGate.__call__ = energy_call
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the candidates' table (or the cost figures) as Markdown."""
    ap = argparse.ArgumentParser(prog="python -m tools.speech_eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=sorted(speech_set.SPEAKERS), default="measure")
    ap.add_argument("--model", default=None, help="model whose features and gate to use (default: shipped)")
    ap.add_argument("--head", default=None, help="a model .json whose gate.detector to measure too")
    ap.add_argument("--per-kind", type=int, default=6, help="streams per non-speech kind and rate")
    ap.add_argument("--no-libs", action="store_true", help="skip webrtcvad and Silero")
    ap.add_argument("--families", type=speech_set.check_families, default=None,
                    help="non-speech generator families, e.g. ab (default: a for choose, b for measure)")
    ap.add_argument("--cost", action="store_true", help="time the detector against the whole chain")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.cost:
        c = cost(args.head or args.model)
        print(json.dumps(c, indent=2))
        return 0
    meta = load_meta(args.model)
    head_det = load_meta(args.head).gate.detector if args.head else None
    data = collect(args.split, meta, args.per_kind, not args.no_libs, progress=lambda s: print(s, file=sys.stderr),
                   families=args.families, inputs=head_det.inputs if head_det else FRAMES)
    hp, thr, hmin = None, 0.5, 0.1
    if head_det is not None:
        hp = head_probs(data, args.head)
        thr, hmin = head_det.threshold, head_det.min_fraction
    min_speech_s = meta.gate.min_fraction * meta.features.window_s
    cands = candidates(data, meta.gate.min_fraction, hp, thr, hmin)
    n_ns = int((data["kind"] != "speech").sum())
    n_sp = int(((data["kind"] == "speech") & (data["speech_s"] >= min_speech_s)).sum())
    print(f"split {args.split}: {n_ns} non-speech windows, {n_sp} speech windows "
          f"(>= {min_speech_s:g} s of speech), window {meta.features.window_s:g} s every {meta.features.hop_s:g} s")
    if "timing_libs" in data:
        tm, tl = data["timing"], data["timing_libs"]
        print(f"time over the split: frame features + detector inputs {tm[0]:.1f} s, webrtcvad (one mode) {tl[0]:.1f} s, "
              f"silero {tl[1]:.1f} s")
    print(table(data, cands, min_speech_s))
    if args.json:
        Path(args.json).write_text(json.dumps({k: score(data, v, min_speech_s) for k, v in cands.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
