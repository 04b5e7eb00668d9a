"""Build the bundled example (a one-minute "conversation" of RAVDESS clips) and the test fixtures.

    python -m tools.make_example --data ../shared/data/ravdess-speech-16k

Writes streamer/examples/conversation.flac with conversation.json (the true label of every clip and
where it sits) and tests/fixtures/*.flac. The clips come from actors 01-20 of RAVDESS (CC BY-NC-SA
4.0, Livingstone & Russo 2018); the attribution goes beside them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile as sf

LABELS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
# (actor, emotion code, intensity, statement, repetition): two voices taking turns
SCRIPT = [
    (3, 1, 1, 1, 1), (4, 3, 2, 1, 1), (3, 3, 2, 2, 1), (4, 8, 2, 2, 2), (3, 5, 2, 1, 2),
    (4, 5, 2, 2, 1), (3, 4, 2, 2, 2), (4, 4, 2, 1, 2), (3, 6, 2, 1, 1), (4, 7, 2, 2, 1),
    (3, 2, 2, 2, 1), (4, 1, 1, 2, 2), (3, 5, 2, 2, 1), (4, 3, 2, 2, 2), (3, 7, 2, 1, 2),
    (4, 2, 2, 1, 1),
]
FIXTURES = [(1, 5, 2, 1, 1), (2, 4, 2, 1, 1), (5, 3, 2, 2, 1), (6, 1, 1, 1, 1)]
ATTRIBUTION = """Audio in this folder is taken from RAVDESS (actors 01-20, speech, resampled to 16 kHz):
Livingstone SR, Russo FA (2018) The Ryerson Audio-Visual Database of Emotional Speech and Song
(RAVDESS): A dynamic, multimodal set of facial and vocal expressions in North American English.
PLoS ONE 13(5): e0196391. https://doi.org/10.1371/journal.pone.0196391
License: Creative Commons Attribution-NonCommercial-ShareAlike 4.0 International (CC BY-NC-SA 4.0).
The clips are cut from silence at their ends and joined with pauses; otherwise unchanged.
"""


def clip_path(root: Path, actor: int, emo: int, inten: int, stmt: int, rep: int) -> Path:
    return root / f"Actor_{actor:02d}" / f"03-01-{emo:02d}-{inten:02d}-{stmt:02d}-{rep:02d}-{actor:02d}.flac"


def trim(y: np.ndarray, sr: int, top_db: float = 35.0, pad_s: float = 0.15) -> np.ndarray:
    import librosa

    _, (a, b) = librosa.effects.trim(y, top_db=top_db)
    pad = int(pad_s * sr)
    return y[max(0, a - pad) : b + pad]


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tools.make_example", description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/ravdess-speech-16k")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    root = Path(args.data)
    rng = np.random.default_rng(args.seed)
    sr = 16000
    parts, truth, t = [], [], 0.0
    lead = np.zeros(int(0.5 * sr), np.float32)
    parts.append(lead)
    t += len(lead) / sr
    for i, (actor, emo, inten, stmt, rep) in enumerate(SCRIPT):
        p = clip_path(root, actor, emo, inten, stmt, rep)
        y, r = sf.read(p, dtype="float32")
        assert r == sr, p
        y = trim(y, sr)
        truth.append({"start": round(t, 3), "end": round(t + len(y) / sr, 3), "label": LABELS[emo - 1],
                      "speaker": f"actor{actor:02d}", "clip": p.name})
        parts.append(y)
        t += len(y) / sr
        # mostly short turn-taking pauses; every fifth a long one, so silence shows on the timeline
        gap_s = 4.0 if i % 5 == 4 else rng.uniform(0.3, 1.0)
        gap = np.zeros(int(gap_s * sr), np.float32)
        parts.append(gap)
        t += len(gap) / sr
    y = np.concatenate(parts)
    total = len(y) / sr
    # a quiet noise floor so "silence" is realistic rather than digital zero
    y = y + rng.normal(0, 10 ** (-62 / 20), len(y)).astype(np.float32)
    ex = Path("streamer/examples")
    sf.write(ex / "conversation.flac", y, sr, subtype="PCM_16")
    (ex / "conversation.json").write_text(json.dumps(
        {"audio": "conversation.flac", "sample_rate": sr, "duration": round(len(y) / sr, 3),
         "note": "true labels of the RAVDESS clips joined into this file", "clips": truth}, indent=1) + "\n")
    (ex / "ATTRIBUTION.md").write_text(ATTRIBUTION)
    fx = Path("tests/fixtures")
    fx.mkdir(parents=True, exist_ok=True)
    for spec in FIXTURES:
        p = clip_path(root, *spec)
        y, _ = sf.read(p, dtype="float32")
        sf.write(fx / p.name, y, sr, subtype="PCM_16")
    (fx / "ATTRIBUTION.md").write_text(ATTRIBUTION)
    print(f"example: {total:.1f} s, {len(truth)} clips; fixtures: {len(FIXTURES)}")


if __name__ == "__main__":
    main()
