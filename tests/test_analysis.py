"""One analysis chain: training, evaluation and the streamer give a clip the same window probabilities.

The training side reads cached frame features (tools/featcache.py) and cuts windows with
``tools.training.windows``; the streamer feeds audio blocks to ``streamer.pipeline.Pipeline``. Both
must end in the same normalised windows and so the same probabilities, with the running normaliser
of the shipped model on (its statistics adapt as the stream goes, so a difference in when a window
is normalised would show).
"""

from __future__ import annotations

import numpy as np
import pytest

from streamer.analysis import ChannelAnalyzer, classify_windows, clip_probs
from streamer.pipeline import Pipeline
from streamer.sources import load_audio


def _stream_probs(meta, clf, y: np.ndarray, sr: int, block: int) -> tuple[list[float], np.ndarray]:
    """Start times and raw probabilities of the speech windows the streamer emits, fed ``block`` samples at a time."""
    pipe = Pipeline(meta, clf, in_rate=sr, in_channels=1)
    events = []
    for a in range(0, len(y), block):
        events += pipe.feed(y[a : a + block, None])
    events += pipe.finish()
    wins = [e for e in events if (e["type"] if isinstance(e, dict) else e.type) == "window"]
    get = (lambda e, k: e[k] if isinstance(e, dict) else getattr(e, k))
    speech = [e for e in wins if get(e, "speech")]
    return [get(e, "start") for e in speech], np.array([get(e, "raw") for e in speech])


def _training_probs(meta, clf, path, tmp_path) -> tuple[list[float], np.ndarray]:
    """The same through training's path: cached frame features, the gate, windows, batched classification."""
    from tools import featcache
    from tools.datasets import parse_ravdess
    from tools.training.windows import stream_windows

    f = meta.features
    cf = featcache.build([parse_ravdess(path)], f, ["clean"], cache_dir=tmp_path, log=None)
    an = ChannelAnalyzer(meta)  # one analyser: its speech flags, then its windows (a speech detector judges them)
    wins = an.frames(cf.mfcc(0, 0), an.speech(cf.mfcc(0, 0), cf.level(0, 0)))
    if meta.gate.detector is None:  # training's own function gives the same windows
        again = stream_windows(cf.mfcc(0, 0), ChannelAnalyzer(meta).speech(cf.mfcc(0, 0), cf.level(0, 0)), meta)
        assert [list(w.starts) for w in again] == [list(w.starts) for w in wins]
    scored = classify_windows(clf, wins, meta.gate.min_fraction, len(meta.labels))
    sec = f.hop_length / f.sample_rate
    starts = [round(float(s) * sec, 3) for w, (sp, _) in zip(wins, scored) for s in w.starts[sp]]
    return starts, np.concatenate([p[sp] for sp, p in scored])


def test_window_probabilities_equal_through_training_and_streaming(model, clips, tmp_path):
    import soundfile as sf

    meta, clf = model
    assert meta.normalisation.kind == "running"
    # three clips back to back: several windows, the normaliser adapting across them, a final short window
    ys = [load_audio(clips[k], meta.features.sample_rate)[0] for k in ("angry", "sad", "happy")]
    y = np.concatenate(ys)
    path = tmp_path / "03-01-05-02-01-01-01.wav"
    sf.write(path, y, meta.features.sample_rate, subtype="FLOAT")
    y = load_audio(path, meta.features.sample_rate)[0]
    t_train, p_train = _training_probs(meta, clf, path, tmp_path)
    assert len(t_train) >= 6
    for block in (160, 1234, 16000):
        t_stream, p_stream = _stream_probs(meta, clf, y, meta.features.sample_rate, block)
        assert t_stream == t_train
        # float32 FFTs round differently with the block size (2e-4 on c0, about -300), and the
        # speech detector's summaries carry that into the features; the first window, normalised
        # mostly by a 10-frame prior on c0, moves most (3.5e-4 for model 2.0.0); a chain that
        # normalised or cut windows differently would be off by 1e-2 and more
        np.testing.assert_allclose(p_stream, p_train, atol=1e-3)
        assert np.array_equal(p_stream.argmax(1), p_train.argmax(1))


def test_clip_prediction_agrees_with_classify_and_has_no_label_without_speech(model, clips, tmp_path):
    """``predict_clips`` (training/CV) and ``labelling.overall`` (``emostream classify``) agree, also on silence."""
    import soundfile as sf

    from streamer.labelling import analyse, overall
    from tools.training.windows import clip_labels, predict_clips

    meta, clf = model
    sr = meta.features.sample_rate
    quiet = (1e-5 * np.random.default_rng(0).standard_normal(3 * sr)).astype(np.float32)  # -100 dBFS: no speech
    sf.write(tmp_path / "quiet.wav", quiet, sr, subtype="FLOAT")
    for path in (clips["angry"], clips["neutral"], tmp_path / "quiet.wav"):
        y = load_audio(path, sr)[0]
        an = ChannelAnalyzer(meta)
        feats, level = an.featurizer.push(y)
        wins = an.frames(feats, an.speech(feats, level))
        P = predict_clips(clf, [wins], meta.input_layout, meta.gate.min_fraction)
        label, conf, probs = overall(analyse(str(path), meta, clf), meta.labels)
        if label is None:
            assert path.name == "quiet.wav" and clip_labels(P)[0] == -1 and np.isnan(P).all()
        else:
            assert meta.labels[clip_labels(P)[0]] == label
            np.testing.assert_allclose(P[0], [probs[k] for k in meta.labels], atol=1e-4)
    assert clip_probs(np.ones((2, 3)), np.zeros(2, bool)) is None


@pytest.mark.parametrize("n_frames", [40, 150, 185, 250])
def test_analyzer_windows_from_frames_match_its_windows_from_audio(model, n_frames):
    """push_frames (training's cached features) and push (audio) cut the same windows."""
    meta, _ = model
    f = meta.features
    y = (0.1 * np.random.default_rng(1).standard_normal(f.n_fft + (n_frames - 1) * f.hop_length)).astype(np.float32)
    a, b = ChannelAnalyzer(meta), ChannelAnalyzer(meta)
    from_audio = [a.push(y[:5000]), a.push(y[5000:]), a.flush()]
    feats, level = b.featurizer.push(y)
    from_frames = b.frames(feats, b.speech(feats, level))
    got = [w for w in from_audio if len(w.starts)]
    assert [list(w.starts) for w in got] == [list(w.starts) for w in from_frames]
    for w1, w2 in zip(got, from_frames):
        np.testing.assert_allclose(w1.feats, w2.feats, atol=1e-5)
