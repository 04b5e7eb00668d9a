"""Continuous-speech evaluation: streams of held-out speakers scored the way users read the timeline.

    python -m tools.continuous [MODEL] --data ROOT --corpus emodb [--speakers emodb-03,emodb-08]   # 16 kHz and 8 kHz mu-law

A clip-per-file score flatters a streaming recogniser: in a call, utterances follow each other
with short pauses, windows straddle them, and the normaliser and the smoothing carry state across.
This builds such streams from labelled clips (issue 13):

- each clip trimmed to its speech (30 dB under its loudest frame);
- runs of 2-4 utterances of one emotion by one speaker, 0.2-0.6 s of pause inside a run,
  0.8-2 s between runs;
- one stream per speaker, and one mixed stream of all speakers' runs in random order;
- at 16 kHz, and as 8 kHz mu-law telephone audio (the streamer resamples it itself).

The stream runs through the streamer's own :class:`~streamer.pipeline.Pipeline` (features, speech
gate, running normaliser, windows, classifier, timeline smoothing), fed in blocks as a file source
feeds it. Each utterance gets the majority label of the speech windows whose centre lies inside it
(``timeline``: the smoothed labels users see; ``raw``: the windows' own argmax); an utterance with
no such window counts as wrong (``unlabelled``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from streamer.config import ModelMeta

__all__ = ["Utterance", "Stream", "trim", "build_stream", "build_streams", "telephone_8k", "run_stream",
           "score_stream", "evaluate_streams", "TOP_DB", "VARIANTS"]

TOP_DB = 30.0  # trimming: frames more than this under the clip's loudest frame are silence
INSIDE_PAUSE = (0.2, 0.6)  # seconds between utterances of one run
BETWEEN_PAUSE = (0.8, 2.0)  # seconds between runs
RUN_LEN = (2, 4)  # utterances per run
FLOOR_DB = -75.0  # the pauses hold a faint noise floor, as any recording does (never digital silence)


@dataclass(frozen=True)
class Utterance:
    """One utterance's place in a stream."""

    start: float
    end: float
    label: int
    speaker: str


@dataclass
class Stream:
    """A continuous stream: mono audio at ``sample_rate`` and where its utterances are."""

    name: str
    audio: np.ndarray
    sample_rate: int
    utterances: list[Utterance]


def trim(y: np.ndarray, sr: int, top_db: float = TOP_DB, frame_s: float = 0.02) -> np.ndarray:
    """The clip from its first to its last frame within ``top_db`` of its loudest frame."""
    n = max(1, int(frame_s * sr))
    k = len(y) // n
    if k == 0:
        return y
    p = np.mean(np.square(y[: k * n].reshape(k, n), dtype=np.float64), axis=1)
    db = 10 * np.log10(p + 1e-12)
    on = np.flatnonzero(db > db.max() - top_db)
    return y[on[0] * n : min(len(y), (on[-1] + 1) * n)]


def _run_sizes(n: int, rng: np.random.Generator) -> list[int]:
    """Split ``n`` utterances into runs of 2-4 (a lone utterance only when ``n`` is 1)."""
    sizes = []
    while n > 0:
        s = n if n <= RUN_LEN[1] else int(rng.integers(RUN_LEN[0], RUN_LEN[1] + 1))
        if n - s == 1:
            s -= 1
        sizes.append(s)
        n -= s
    return sizes


def build_stream(name: str, clips: Sequence[tuple[np.ndarray, int, str]], sr: int,
                 rng: np.random.Generator) -> Stream:
    """A stream of ``clips`` (audio, label, speaker), grouped in runs of one speaker and emotion.

    Runs are formed per (speaker, label) and their order is shuffled, so a stream of several
    speakers changes speaker between runs, as in a conversation.
    """
    groups: dict[tuple[str, int], list[np.ndarray]] = {}
    for y, lab, spk in clips:
        groups.setdefault((spk, lab), []).append(trim(np.asarray(y, np.float32), sr))
    runs = []
    for (spk, lab), ys in sorted(groups.items()):
        order = rng.permutation(len(ys))
        a = 0
        for s in _run_sizes(len(ys), rng):
            runs.append([(ys[i], lab, spk) for i in order[a : a + s]])
            a += s
    parts, utts, t = [], [], 0
    for r in rng.permutation(len(runs)):
        for j, (y, lab, spk) in enumerate(runs[r]):
            lo, hi = INSIDE_PAUSE if j else BETWEEN_PAUSE
            gap = int(rng.uniform(lo, hi) * sr)
            parts.append(np.zeros(gap, np.float32))
            t += gap
            utts.append(Utterance(t / sr, (t + len(y)) / sr, lab, spk))
            parts.append(y)
            t += len(y)
    parts.append(np.zeros(int(BETWEEN_PAUSE[0] * sr), np.float32))
    audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    audio = audio + (10 ** (FLOOR_DB / 20)) * rng.standard_normal(len(audio)).astype(np.float32)
    return Stream(name, np.clip(audio, -1, 1).astype(np.float32), sr, utts)


def build_streams(clips: Sequence[tuple[np.ndarray, int, str]], sr: int, seed: int) -> list[Stream]:
    """One stream per speaker, plus a mixed stream of all the speakers (when there are several)."""
    rng = np.random.default_rng(seed)
    speakers = sorted({c[2] for c in clips})
    out = [build_stream(f"speaker {s}", [c for c in clips if c[2] == s], sr, rng) for s in speakers]
    if len(speakers) > 1:
        out.append(build_stream("mixed " + ",".join(speakers), clips, sr, rng))
    return out


def telephone_8k(stream: Stream) -> Stream:
    """The stream as 8 kHz mu-law telephone audio (decoded to float), as a call centre records it."""
    import soxr

    from tools.augment import mulaw_decode, mulaw_encode

    lo = soxr.resample(stream.audio, stream.sample_rate, 8000, quality="HQ")
    return Stream(stream.name, mulaw_decode(mulaw_encode(lo)), 8000, stream.utterances)


def _get(ev: Any, key: str) -> Any:
    """A field of an event (a dict, or a typed event object)."""
    return ev.get(key) if isinstance(ev, dict) else getattr(ev, key, None)


#: timeline settings scored beside the shipped one in every evaluation, to choose smoothing by CV
VARIANTS: dict[str, dict[str, Any]] = {
    "raw1": {"smooth_windows": 1},
    "reset0.3": {"reset_pause_s": 0.3},
    "reset0.5": {"reset_pause_s": 0.5},
    "reset0.7": {"reset_pause_s": 0.7},
    "reset1.0": {"reset_pause_s": 1.0},
    "s5_reset0.5": {"smooth_windows": 5, "reset_pause_s": 0.5},
}


class _Fan:
    """The pipeline's timeline, with other timelines fed the same windows (their speech labels are kept)."""

    def __init__(self, main, others: dict):
        self.main, self.others = main, others
        self.labels: dict[str, list[str | None]] = {k: [] for k in others}

    def add(self, channel, start, end, speech, probs, pause_s=0.0, band=None):
        for name, t in self.others.items():
            for ev in t.add(channel, start, end, speech, probs, pause_s=pause_s):
                if _get(ev, "type") == "window" and _get(ev, "speech"):
                    self.labels[name].append(_get(ev, "label"))
        return self.main.add(channel, start, end, speech, probs, pause_s=pause_s, band=band)

    def __getattr__(self, name):
        return getattr(self.main, name)


def run_stream(stream: Stream, meta: ModelMeta, predict: Callable[[np.ndarray], np.ndarray],
               block_s: float = 0.5, variants: dict[str, dict[str, Any]] | None = None
               ) -> list[tuple[float, str | None, np.ndarray | None, dict[str, str | None]]]:
    """Feed the stream to the streamer's pipeline in blocks.

    Returns per speech window: (centre, smoothed label, raw probs, {variant: its smoothed label}),
    the variants being other timeline settings (:class:`~streamer.timeline.TimelineConfig` fields)
    fed the same windows.
    """
    from streamer.pipeline import Pipeline
    from streamer.timeline import Timeline, TimelineConfig

    pipe = Pipeline(meta, predict, in_rate=stream.sample_rate, in_channels=1)
    base = pipe.timeline
    fan = _Fan(base, {k: Timeline(base.labels, ["mix"], base.window_s, base.hop_s, TimelineConfig(**v))
                      for k, v in (variants or {}).items()})
    pipe.timeline = fan
    n = max(1, int(block_s * stream.sample_rate))
    events = []
    for a in range(0, len(stream.audio), n):
        events.extend(pipe.feed(stream.audio[a : a + n, None]))
    events.extend(pipe.finish())
    out = []
    for ev in events:
        if _get(ev, "type") == "window" and _get(ev, "speech"):
            j = len(out)
            out.append(((_get(ev, "start") + _get(ev, "end")) / 2, _get(ev, "label"), _get(ev, "raw"),
                        {k: v[j] for k, v in fan.labels.items()}))
    return out


def _majority(labels: list[int], weights: list[np.ndarray]) -> int:
    """The most frequent label; a tie goes to the label with the larger summed probability."""
    c = Counter(labels)
    top = max(c.values())
    tied = [k for k, v in c.items() if v == top]
    if len(tied) == 1 or not weights:
        return tied[0]
    s = np.sum(weights, axis=0)
    return max(tied, key=lambda k: s[k])


def score_stream(stream: Stream, windows: list[tuple], labels: list[str]) -> dict[str, list[int]]:
    """Per utterance: the true label and the timeline's and the raw windows' majority labels (-1: none).

    Timeline variants (a fourth item per window, see :func:`run_stream`) are scored as
    ``timeline[NAME]``.
    """
    names = sorted(windows[0][3]) if windows and len(windows[0]) > 3 else []
    out: dict[str, list[int]] = {"true": [], "timeline": [], "raw": [], **{f"timeline[{k}]": [] for k in names}}
    centres = np.array([w[0] for w in windows])
    for u in stream.utterances:
        inside = np.flatnonzero((centres >= u.start) & (centres < u.end)) if len(centres) else []
        raws = [windows[i][2] for i in inside if windows[i][2] is not None]
        out["true"].append(u.label)
        for key, get in [("timeline", lambda w: w[1])] + [(f"timeline[{k}]", lambda w, k=k: w[3][k]) for k in names]:
            sm = [labels.index(get(windows[i])) for i in inside if get(windows[i]) is not None]
            out[key].append(_majority(sm, raws) if sm else -1)
        out["raw"].append(_majority([int(np.argmax(r)) for r in raws], raws) if raws else -1)
    return out


def evaluate_streams(streams: Sequence[Stream], meta: ModelMeta, predict: Callable[[np.ndarray], np.ndarray],
                     telephone: bool = False, variants: dict[str, dict[str, Any]] | None = None
                     ) -> dict[str, dict[str, list[int]]]:
    """Score every stream (as 8 kHz mu-law with ``telephone``): stream name -> per-utterance labels."""
    res = {}
    for s in streams:
        s2 = telephone_8k(s) if telephone else s
        res[s.name] = score_stream(s, run_stream(s2, meta, predict, variants=variants), list(meta.labels))
    return res


def summarise(scored: dict[str, dict[str, list[int]]]) -> dict[str, Any]:
    """Accuracy per utterance over the single-speaker streams and over the mixed ones."""
    out: dict[str, Any] = {}
    for kind, keep in (("speaker", lambda n: n.startswith("speaker")), ("mixed", lambda n: n.startswith("mixed"))):
        t = [v for n, s in scored.items() if keep(n) for v in s["true"]]
        if not t:
            continue
        t = np.array(t)
        first = next(s for n, s in scored.items() if keep(n))
        for key in [k for k in first if k != "true"]:
            p = np.array([v for n, s in scored.items() if keep(n) for v in s[key]])
            out[f"{kind}_{key}"] = round(float(np.mean(p == t)), 4)
        out[f"{kind}_utterances"] = int(len(t))
        out[f"{kind}_unlabelled"] = int(sum(v == -1 for n, s in scored.items() if keep(n) for v in s["timeline"]))
    return out


def main(argv: list[str] | None = None) -> int:
    from streamer.classifier import Classifier
    from streamer.config import load_meta
    from streamer.errors import EmostreamError
    from tools.datasets import LABELS, corpus_items, data_root
    from streamer.sources import load_audio

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=None, help="a .tflite model (default: the shipped one)")
    ap.add_argument("--data", default=None, help="folder holding the corpora (default: $EMOSTREAM_DATA)")
    ap.add_argument("--corpus", default="emodb", choices=["ravdess", "emodb"])
    ap.add_argument("--speakers", default=None, help="comma-separated speakers (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the per-utterance scores here")
    args = ap.parse_args(argv)
    try:
        meta = load_meta(args.model)
        clf = Classifier(meta=meta)
        items = corpus_items(data_root(args.data), args.corpus)
        if args.speakers:
            want = set(args.speakers.split(","))
            items = [it for it in items if it.speaker in want]
        sr = meta.features.sample_rate
        clips = [(load_audio(it.path, sr)[0], LABELS.index(it.label), it.speaker) for it in items
                 if it.label in meta.labels]
    except (EmostreamError, ValueError) as exc:
        print(f"continuous: error: {exc}", file=sys.stderr)
        return 2
    streams = build_streams(clips, sr, args.seed)
    res = {"model": meta.version, "corpus": args.corpus, "streams": len(streams),
           "command": "python -m tools.continuous " + " ".join(argv if argv is not None else sys.argv[1:])}
    for key, tel in (("16k", False), ("mulaw_8k", True)):
        scored = evaluate_streams(streams, meta, clf, telephone=tel, variants=VARIANTS)
        res[key] = summarise(scored)
    print(json.dumps(res, indent=1))
    if args.json:
        from pathlib import Path

        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
