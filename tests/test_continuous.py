"""Continuous-speech evaluation streams (tools/continuous.py): their design, and scoring per utterance."""

from __future__ import annotations

import numpy as np

from tools import continuous as C

SR = 16000


def _clip(label: int, speaker: str, rng) -> tuple[np.ndarray, int, str]:
    """0.4 s of near-silence, a 1-1.5 s tone, 0.3 s of near-silence."""
    n = int(rng.uniform(1.0, 1.5) * SR)
    tone = 0.3 * np.sin(2 * np.pi * (150 + 20 * label) * np.arange(n) / SR)
    y = np.concatenate([1e-4 * rng.standard_normal(int(0.4 * SR)), tone, 1e-4 * rng.standard_normal(int(0.3 * SR))])
    return y.astype(np.float32), label, speaker


def test_streams_follow_the_design():
    rng = np.random.default_rng(0)
    clips = [_clip(lab, spk, rng) for spk in ("a", "b") for lab in range(4) for _ in range(5)]
    streams = C.build_streams(clips, SR, seed=1)
    assert [s.name for s in streams] == ["speaker a", "speaker b", "mixed a,b"]
    for s in streams:
        u = s.utterances
        assert len(u) == (40 if s.name.startswith("mixed") else 20)
        # trimmed: each utterance is the tone alone (20 ms frames), at its place in the audio
        for x in u:
            assert 0.95 <= x.end - x.start <= 1.52
            seg = s.audio[int(x.start * SR) + 10 : int(x.end * SR) - 10]
            assert np.sqrt(np.mean(seg**2)) > 0.1
        gaps = np.array([b.start - a.end for a, b in zip(u, u[1:])])
        same = np.array([a.label == b.label and a.speaker == b.speaker for a, b in zip(u, u[1:])])
        assert np.all((gaps > 0.19) & (gaps < 2.01))
        # runs of one speaker and emotion: 2-4 utterances, 0.2-0.6 s apart inside, 0.8-2 s between
        starts = np.flatnonzero(np.r_[True, gaps >= 0.8])
        lens = np.diff(np.r_[starts, len(u)])
        assert lens.min() >= 2 and lens.max() <= 4
        assert np.all(gaps[gaps < 0.8] <= 0.6) and np.all(same[gaps < 0.8])
        quiet = s.audio[int((u[0].start - 0.15) * SR) : int((u[0].start - 0.05) * SR)]
        assert 0 < np.sqrt(np.mean(quiet**2)) < 1e-3  # pauses: a faint floor, never digital silence
    assert {x.speaker for x in streams[2].utterances} == {"a", "b"}
    tel = C.telephone_8k(streams[0])
    assert tel.sample_rate == 8000 and abs(len(tel.audio) - len(streams[0].audio) / 2) < 2


def test_utterances_take_the_majority_of_the_windows_centred_in_them():
    u = [C.Utterance(0.0, 2.0, 1, "a"), C.Utterance(3.0, 5.0, 2, "a"), C.Utterance(6.0, 6.5, 3, "a")]
    s = C.Stream("speaker a", np.zeros(7 * SR, np.float32), SR, u)
    labels = ["l0", "l1", "l2", "l3"]
    p = np.eye(4, dtype=np.float32)
    windows = [(0.5, "l1", p[1]), (1.5, "l0", p[1]), (1.9, "l1", p[0]),  # smoothed l1 2:1, raw l1 2:1
               (3.5, "l2", p[3]), (4.5, "l3", p[3])]  # a tie: the summed raw probabilities decide
    sc = C.score_stream(s, windows, labels)
    assert sc["true"] == [1, 2, 3]
    assert sc["timeline"] == [1, 3, -1] and sc["raw"] == [1, 3, -1]  # no window centred in the third
    summ = C.summarise({"speaker a": sc})
    assert summ["speaker_timeline"] == round(1 / 3, 4) and summ["speaker_unlabelled"] == 1


def test_a_stream_runs_through_the_streamer_pipeline(model, clips):
    """The shipped model on a short stream of real speech (the fixture clips; tones would be rejected
    by the speech detector): every window event comes from the streamer's own pipeline."""
    from streamer.sources import load_audio

    meta, clf = model
    speech = [(load_audio(clips[k], SR)[0], meta.labels.index(k), "a") for k in ("angry", "angry", "sad", "sad")]
    s = C.build_streams(speech, SR, seed=0)[0]
    wins = C.run_stream(s, meta, clf, variants={"raw1": {"smooth_windows": 1}})
    assert wins and all(lab in meta.labels for _, lab, _, _ in wins)
    # a timeline without smoothing labels every window with its own argmax
    assert all(v["raw1"] == meta.labels[int(np.argmax(raw))] for _, _, raw, v in wins)
    n_hops = len(s.audio) / SR / meta.features.hop_s
    assert len(wins) <= n_hops + 1
    res = C.evaluate_streams([s], meta, clf, telephone=True, variants=C.VARIANTS)
    assert len(res["speaker a"]["timeline"]) == 4
    assert set(C.summarise(res)) >= {f"speaker_timeline[{k}]" for k in C.VARIANTS}
