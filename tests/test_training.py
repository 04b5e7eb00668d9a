"""Smoke tests of the training side on synthetic RAVDESS-named clips (no corpus needed).

Trains tiny models for one epoch in a temporary folder, converts them to TFLite, and checks that the
result loads with ``streamer.config.load_meta`` and runs through the LiteRT interpreter with a dynamic
time axis, and that Keras and TFLite agree (float32: max abs difference < 1e-4; int8 dynamic-range:
< 0.05 on probabilities).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tools.datasets import LABELS

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SR = 16000


def _clip(emotion: int, actor: int, rng) -> np.ndarray:
    """0.5 s silence, 2.3 s of a harmonic 'voice' whose pitch and brightness depend on the emotion, 0.5 s silence."""
    t = np.arange(int(2.3 * SR)) / SR
    f0 = 90 + 25 * emotion + 10 * (actor % 2)
    voice = sum((0.5 ** (k * (1 + emotion % 3) / 3)) * np.sin(2 * np.pi * f0 * (k + 1) * t) for k in range(8))
    voice *= 0.2 * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t) ** 2)
    sil = 1e-4 * rng.standard_normal(SR // 2)
    y = np.concatenate([sil, voice + 0.003 * rng.standard_normal(len(t)), sil])
    return y.astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    import soundfile as sf
    root = tmp_path_factory.mktemp("ravdess")
    rng = np.random.default_rng(0)
    for actor in range(1, 6):
        d = root / f"Actor_{actor:02d}"
        d.mkdir()
        for emo in range(1, 9):
            sf.write(d / f"03-01-{emo:02d}-01-01-01-{actor:02d}.flac", _clip(emo - 1, actor, rng), SR)
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, corpus):
    """A data folder with both corpora the default recipe trains on: the RAVDESS clips above and
    EmoDB-named clips of two speakers (letters N F T W A E: neutral, happy, sad, angry, fearful, disgust)."""
    import shutil

    import soundfile as sf

    root = tmp_path_factory.mktemp("data")
    shutil.copytree(corpus, root / "ravdess-speech-16k")
    emo = root / "emodb-16k"
    emo.mkdir()
    rng = np.random.default_rng(5)
    letters = {"N": 0, "F": 2, "T": 3, "W": 4, "A": 5, "E": 6}
    for spk in ("03", "08"):
        for letter, k in letters.items():
            sf.write(emo / f"{spk}a01{letter}a.flac", _clip(k, int(spk), rng), SR)
    return root


def _args(tmp_path, corpus, *extra):
    return ["--data", str(corpus), "--out", str(tmp_path / "model"), "--reports", str(tmp_path / "reports"),
            "--cache", str(tmp_path / "cache"), "--epochs", "1", *extra]


def _run_tflite(path: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], list(x.shape))
    it.allocate_tensors()
    it.set_tensor(inp["index"], x.astype(np.float32))
    it.invoke()
    return it.get_tensor(out["index"])


@pytest.mark.train
@pytest.mark.slow
def test_default_trains_converts_and_runs(tmp_path, data_root):
    pytest.importorskip("tensorflow")
    from streamer.config import load_meta
    from tools import train

    assert train.main(_args(tmp_path, data_root, "--model", "default", "--seeds", "2")) == 0
    tfl = tmp_path / "model" / "emotion.tflite"
    meta = load_meta(tfl)
    assert meta.labels == train.LABELS and meta.input_layout == "steps" and meta.features.pitch
    assert meta.normalisation.kind == "running" and len(meta.normalisation.mean) == meta.features.n_channels
    assert meta.extra["tflite"]["keras_agreement"]["max_abs_diff"] < 0.05
    f = meta.features
    for steps in (f.window_steps, f.window_steps // 3):  # full window and a short clip's window
        p = _run_tflite(tfl, np.random.default_rng(1).standard_normal((3, steps, f.n_channels)))
        assert p.shape == (3, len(meta.labels))
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-4)


@pytest.mark.train
@pytest.mark.slow
def test_seed_trains_converts_and_runs(tmp_path, corpus):
    pytest.importorskip("tensorflow")
    from streamer.config import load_meta

    from tools import train

    assert train.main(_args(tmp_path, corpus, "--model", "seed")) == 0
    meta = load_meta(tmp_path / "model" / "seed.tflite")
    assert meta.input_layout == "coefficients" and meta.features.window_steps == 1
    p = _run_tflite(tmp_path / "model" / "seed.tflite", np.zeros((2, meta.features.n_mfcc, 1)))
    assert p.shape == (2, 8)


@pytest.mark.train
@pytest.mark.slow
def test_cv_report(tmp_path, data_root):
    pytest.importorskip("tensorflow")
    from tools import train

    assert train.main(_args(tmp_path, data_root, "--model", "default", "--cv")) == 0
    rep = json.loads((tmp_path / "reports" / "cv_default.json").read_text())
    for key in ("clean_16k", "mulaw_8k", "codec_16k"):  # codec: the test clips' MP3/Opus copies
        assert 0.0 <= rep[key]["accuracy"] <= 1.0
        assert set(rep[key]["recall"]) == set(train.LABELS)
        assert np.array(rep[key]["confusion"]).sum() == 40
    assert (tmp_path / "reports" / "confusion_default_clean_16k.png").exists()


@pytest.mark.train
@pytest.mark.slow
def test_cv_saved_members_merge_into_one_ensemble(tmp_path, data_root):
    """Two CV runs with disjoint seeds merge into the CV of one ensemble of all their models."""
    pytest.importorskip("tensorflow")
    from tools import cv_members, train

    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert train.main(_args(tmp_path, data_root, "--cv", "--seeds-cv", "2", "--seed", "1", "--tag", "a",
                            "--save-probs", str(a))) == 0
    assert train.main(_args(tmp_path, data_root, "--cv", "--seeds-cv", "1", "--seed", "2", "--tag", "b",
                            "--save-probs", str(b))) == 0
    probs, ys, seeds = cv_members.load([str(a)])
    assert seeds == [1, 2] and probs["clean/0"].shape == (2, len(ys[0]), len(train.LABELS))
    # the ensemble's CV from the saved models is the run's own report
    rep = json.loads((tmp_path / "reports" / "cv_default_a.json").read_text())
    full = cv_members.score(probs, ys, np.arange(2))
    for key in ("clean_16k", "mulaw_8k", "codec_16k"):
        assert full[key]["confusion"] == rep[key]["confusion"]
    # seed 2 alone is the same model as the second model of the first run (seed = --seed + k)
    pb, _, _ = cv_members.load([str(b)])
    np.testing.assert_allclose(pb["clean/1"][0], probs["clean/1"][1], atol=1e-5)
    with pytest.raises(ValueError, match="repeats seeds"):
        cv_members.load([str(a), str(b)])
    assert cv_members.main([str(a), "--json", str(tmp_path / "m.json"), "--plots", str(tmp_path / "p"),
                            "--name", "default"]) == 0
    merged = json.loads((tmp_path / "m.json").read_text())
    assert merged["seeds"] == [1, 2] and merged["seeds_cv"] == 2 and merged["recipe"]["name"] == "default"
    # the merged report is a CV report: the model's metadata can be refreshed from it
    from tools.training.export import eval_summary
    from tools.training.recipe import recipe

    summary = eval_summary(merged, recipe("default"))
    assert summary["clean_16k"]["accuracy"] == rep["clean_16k"]["accuracy"] and summary["models_per_fold"] == 2
    assert (tmp_path / "p" / "confusion_default_mulaw_8k.png").stat().st_size > 1000
    # the same ensemble's recall split by RAVDESS intensity adds up to the report's recall per label
    from tools import cv_breakdown

    assert cv_breakdown.main([str(a), "--data", str(data_root), "--by", "intensity",
                              "--json", str(tmp_path / "b.json")]) == 0
    split = json.loads((tmp_path / "b.json").read_text())["recall"]
    for label, groups in split.items():
        right, n = sum(g["right"] for g in groups.values()), sum(g["n"] for g in groups.values())
        assert set(groups) <= {"normal", "strong"}
        assert round(right / n, 4) == rep["clean_16k"]["recall"][label]
    assert sum(g["n"] for gs in split.values() for g in gs.values()) == sum(len(y) for y in ys.values())


@pytest.mark.train
def test_keras_tflite_agreement_float32_and_int8():
    pytest.importorskip("tensorflow")
    from tools.convert import agreement, to_tflite
    from tools.training.network import build_model
    from tools.training.recipe import recipe

    rcp = recipe("default")
    model = build_model(rcp, seed=3)
    x = np.random.default_rng(0).standard_normal((16, rcp.features.window_steps, rcp.features.n_channels)).astype(np.float32)
    f32 = agreement(model, to_tflite(model, "none"), x)
    assert f32["max_abs_diff"] < 1e-4
    i8 = agreement(model, to_tflite(model, "dynamic"), x)
    assert i8["max_abs_diff"] < 0.05


def test_stream_windows_match_streamer_cuts():
    """Evaluation windows: one per hop while whole, plus the streamer's final or short window."""
    from streamer.config import NormConfig
    from tools.training.recipe import recipe
    from tools.training.windows import stream_windows, training_meta

    rcp = recipe("default")
    cfg = rcp.features
    rng = np.random.default_rng(0)
    for n, expect in ((185, 2), (120, 1), (250, 3)):
        mf = rng.standard_normal((n, cfg.n_channels)).astype(np.float32)
        parts = stream_windows(mf, np.ones(n, bool), training_meta(rcp, NormConfig(kind="none")))
        wins = [f for p in parts for f in p.feats]
        frac = np.concatenate([p.speech_frac for p in parts])
        assert len(wins) == expect and np.all(frac == 1.0)
        assert wins[0].shape[1] == cfg.n_channels
        if n < cfg.window_frames:
            assert wins[0].shape[0] == n
        else:
            np.testing.assert_allclose(wins[0], mf[: cfg.window_frames], atol=1e-6)


def test_augmentations_shapes_and_telephone_band():
    from tools import augment

    rng = np.random.default_rng(0)
    y = (0.3 * np.sin(2 * np.pi * 6000 * np.arange(SR) / SR) + 0.3 * np.sin(2 * np.pi * 500 * np.arange(SR) / SR)).astype(np.float32)
    for name in augment.VERSIONS:
        out = augment.make_version(y, name, SR, rng)
        assert out.dtype == np.float32 and np.all(np.abs(out) <= 1.0)
        assert abs(len(out) - len(y)) <= 0.12 * len(y)
    tel = augment.telephone(y, SR)
    spec = np.abs(np.fft.rfft(tel))
    freqs = np.fft.rfftfreq(len(tel), 1 / SR)
    assert spec[np.abs(freqs - 6000) < 5].max() < 0.01 * spec[np.abs(freqs - 500) < 5].max()
    codes = augment.mulaw_encode(np.linspace(-1, 1, 101))
    np.testing.assert_allclose(augment.mulaw_decode(codes), np.linspace(-1, 1, 101), atol=0.02)


def test_mel_band_mask_removes_whole_mel_bands_from_cepstral_windows():
    from streamer.features import dct_matrix
    from tools.training.loop import spec_mask as _spec_mask

    X = np.random.default_rng(0).normal(size=(32, 150, 64)).astype(np.float32)
    Y = _spec_mask(X.copy(), np.random.default_rng(1), max_t=0, max_c=8, n_mels=64)
    M = Y @ dct_matrix(64, 64).T  # back to (z-scored) log-mel bands
    zero_bands = np.all(np.abs(M) < 1e-4, axis=1)  # [32, 64]: bands silent over the whole window
    widths = zero_bands.sum(1)
    assert widths.max() > 0 and widths.max() <= 8
    for b in range(32):  # each masked window loses one contiguous run of bands, and nothing else changes
        k = np.flatnonzero(zero_bands[b])
        if len(k):
            assert np.array_equal(k, np.arange(k[0], k[0] + len(k)))
            keep = np.setdiff1d(np.arange(64), k)
            np.testing.assert_allclose(M[b][:, keep], (X[b] @ dct_matrix(64, 64).T)[:, keep], atol=1e-4)
        else:
            np.testing.assert_array_equal(Y[b], X[b])


def test_mixup_keeps_each_window_dominant_and_labels_normalised():
    from tools.training.loop import mixup as _mixup

    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 150, 40)).astype(np.float32)
    y = np.eye(8, dtype=np.float32)[rng.integers(0, 8, 64)]
    Xm, ym = _mixup(X.copy(), y.copy(), 0.4, rng)
    np.testing.assert_allclose(ym.sum(1), 1.0, atol=1e-6)
    lam = (ym * y).sum(1)  # the own label's share (>= 0.5; 1 where mixed with its own class)
    assert lam.min() >= 0.5 and lam.max() <= 1.0 and np.any(lam < 0.9)
    assert np.all(ym.argmax(1) == y.argmax(1)) or np.all(lam[ym.argmax(1) != y.argmax(1)] == 0.5)
    # each mixed window is a convex mix of itself and exactly one other window
    other = (Xm - lam[:, None, None] * X) / np.maximum(1 - lam, 1e-6)[:, None, None]
    mixed = lam < 1 - 1e-3
    dist = ((other[mixed][:, None] - X[None]) ** 2).mean((2, 3))
    assert np.all(dist.min(1) < 1e-3)


@pytest.mark.train
@pytest.mark.slow
def test_weight_averaging_is_the_mean_of_the_last_epochs(tmp_path, corpus, monkeypatch):
    """--swa 0.5 of 4 epochs: the final weights are the mean of epochs 3 and 4 (BatchNorm statistics too)."""
    pytest.importorskip("tensorflow")
    from tools.datasets import ravdess_items
    from tools.training import loop
    from tools.training.data import Data
    from tools.training.recipe import recipe
    from tools.training.windows import norm_config

    rcp = recipe("default", epochs=4, swa=0.5, mixup=0.4, pool="attention", weight_decay=1e-3)
    data = Data(ravdess_items(corpus), rcp, cache_dir=str(tmp_path / "cache"))
    tr = np.arange(len(data.items))
    ncfg = norm_config(rcp, *data.prior(tr))
    snaps, build = [], loop.build_model

    def build_and_watch(r, seed, *rest):
        m = build(r, seed, *rest)
        fit_once = m.fit

        def fit_and_snapshot(*a, **k):
            h = fit_once(*a, **k)
            snaps.append(m.get_weights())
            return h

        m.fit = fit_and_snapshot
        return m

    monkeypatch.setattr(loop, "build_model", build_and_watch)
    model, info = loop.fit(data, tr, rcp, ncfg, seed=3)
    assert info["epochs_run"] == 4 and len(snaps) == 4
    final = model.get_weights()
    for w, a, b in zip(final, snaps[2], snaps[3]):
        np.testing.assert_allclose(w, (a + b) / 2, atol=1e-6)
    assert max(float(np.abs(w - b).max()) for w, b in zip(final, snaps[3])) > 1e-5


@pytest.mark.train
@pytest.mark.slow
def test_pitch_model_with_mfcc_view_members_trains_converts_and_runs(tmp_path, data_root):
    """--pitch --views all,mfcc: two networks per seed, one reading the MFCCs only; the shipped graph
    takes n_mfcc + 2 channels, and the mfcc-view member does not see the pitch channels at all."""
    pytest.importorskip("tensorflow")
    from streamer.config import load_meta
    from tools import train
    from tools.training.network import build_model, members_of
    from tools.training.recipe import recipe

    assert members_of(recipe("default", views=["all", "mfcc"]), 2) == [(0, "all"), (0, "mfcc"), (1, "all"), (1, "mfcc")]
    assert train.main(_args(tmp_path, data_root, "--model", "default", "--seeds", "1", "--pitch",
                            "--views", "all,mfcc")) == 0
    meta = load_meta(tmp_path / "model" / "emotion.tflite")
    f = meta.features
    assert f.pitch and f.n_channels == f.n_mfcc + 2 and len(meta.normalisation.mean) == f.n_channels
    p = _run_tflite(tmp_path / "model" / "emotion.tflite",
                    np.random.default_rng(2).standard_normal((2, f.window_steps, f.n_channels)))
    assert p.shape == (2, 8)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-4)

    rcp = recipe("default", pitch=True)
    m = build_model(rcp, seed=0, view="mfcc")
    x = np.random.default_rng(3).standard_normal((2, 150, f.n_channels)).astype(np.float32)
    x2 = x.copy()
    x2[:, :, f.n_mfcc:] += 5.0  # only the pitch channels differ
    np.testing.assert_allclose(m(x, training=False).numpy(), m(x2, training=False).numpy(), atol=1e-6)
    full = build_model(rcp, seed=0, view="all")
    assert np.abs(full(x, training=False).numpy() - full(x2, training=False).numpy()).max() > 1e-4


def test_mfcc_view_masks_fall_on_mfcc_channels_only():
    """An mfcc-view member's masks never touch the pitch channels it does not read."""
    from tools.training.loop import spec_mask as _spec_mask

    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 150, 42)).astype(np.float32) + 10.0  # no exact zeros
    before = X.copy()
    _spec_mask(X[:, :, :40], rng, 30, 12)
    np.testing.assert_array_equal(X[:, :, 40:], before[:, :, 40:])
    assert np.mean(X[:, :, :40] == 0.0) > 0.01  # the masks did fall on the MFCCs


@pytest.mark.slow
def test_no_data_folder_is_one_clear_error(tmp_path, monkeypatch, capsys):
    """No --data and no $EMOSTREAM_DATA: one line naming both, exit status 2 (no fixed path, no traceback)."""
    from tools import train

    monkeypatch.delenv("EMOSTREAM_DATA", raising=False)
    assert train.main(["--cv", "--reports", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("train: error: no data folder") and "EMOSTREAM_DATA" in err[0]
    assert train.main(["--data", str(tmp_path / "missing"), "--cv"]) == 2
    assert train.main(["--data", str(tmp_path), "--cv"]) == 2  # a folder without any corpus
    assert "no ravdess corpus" in capsys.readouterr().err


def test_recipes_are_presets_with_checked_overrides():
    from tools.training.recipe import PRESETS, RecipeError, recipe

    d = recipe("default")
    assert d.features.pitch and d.seeds == 5 and d.versions[:2] == ("clean", "tel") and len(d.train_versions) == 16
    r = recipe("default", epochs=3, n_mfcc=20, views=["all", "mfcc"])
    assert (r.epochs, r.features.n_mfcc, r.views) == (3, 20, ("all", "mfcc")) and PRESETS["default"].epochs == 130
    assert set(recipe("default").corpora) == {"ravdess", "emodb"} and set(PRESETS) == {"seed", "default"}
    with pytest.raises(RecipeError, match="unknown recipe fields"):
        recipe("default", epoch=3)
    with pytest.raises(RecipeError, match="pitch channels"):
        recipe("default", std_pool=True)
    with pytest.raises(RecipeError, match="unknown recipe"):
        recipe("nope")
    assert d.to_json()["features"]["n_mfcc"] == 40


def test_straddling_windows_mix_the_two_utterances_labels(corpus, tmp_path):
    """A window over utterance A, a pause and utterance B has a target shared by their speech frames."""
    from streamer.config import NormConfig
    from tools.datasets import ravdess_items
    from tools.training.data import Data
    from tools.training.loop import epoch_set, straddle_window
    from tools.training.recipe import recipe

    rcp = recipe("default", train_versions=["clean"], straddle=1.0)
    data = Data(ravdess_items(corpus, actors=[1]), rcp, cache_dir=str(tmp_path / "cache"), log=None)
    rng = np.random.default_rng(0)
    ncfg = NormConfig(kind="none")
    mixed = 0
    for _ in range(40):
        x, t = straddle_window(data, 0, 5, 0, rcp.features, ncfg, rng)
        assert x.shape == (rcp.features.window_steps, rcp.features.n_channels)
        np.testing.assert_allclose(t.sum(), 1.0, atol=1e-6)
        assert set(np.flatnonzero(t)) <= {data.y[0], data.y[5]}
        mixed += int(np.count_nonzero(t) == 2)
    assert 0 < mixed < 40  # some windows reach both utterances, some only one
    X, Y = epoch_set(data, np.arange(len(data.items)), rcp, ncfg, rng)
    assert Y.shape == (len(data.items), 8) and np.allclose(Y.sum(1), 1.0)


def test_temperature_scaling_fits_an_overconfident_model():
    from tools.training.reports import calibrate, ece, fit_temperature, metrics

    rng = np.random.default_rng(0)
    n, k = 4000, 8
    logits = rng.normal(size=(n, k)) * 2
    y = np.array([rng.choice(k, p=np.exp(l) / np.exp(l).sum()) for l in logits])  # calibrated at T = 1
    P_over = np.exp(logits * 2.5)
    P_over /= P_over.sum(1, keepdims=True)  # the same model, over-confident
    t = fit_temperature(P_over, y)
    assert 2.1 < t < 2.9
    assert ece(calibrate(P_over, t), y) < 0.5 * ece(P_over, y)
    m = metrics(np.array([0, 1, 2, 2]), np.array([0, -1, 2, 1]))  # -1: no label (no speech windows)
    assert m["accuracy"] == 0.5 and m["no_label"] == 1 and sum(map(sum, m["confusion"])) == 3
    assert m["predicted"]["neutral"] == round(1 / 3, 4)


@pytest.mark.train
@pytest.mark.slow
def test_cross_corpus_report_and_its_evaluation_entries(tmp_path, data_root):
    """--cross emodb:ravdess trains on one corpus and scores the other per clip and as continuous speech;
    the model's evaluation block then carries it (an accuracy per condition, for `emostream info`)."""
    pytest.importorskip("tensorflow")
    from tools import train
    from tools.training.export import eval_summary
    from tools.training.recipe import recipe

    root = data_root
    args = ["--data", str(root), "--reports", str(tmp_path / "reports"), "--cache", str(tmp_path / "cache"),
            "--epochs", "1", "--no-curve", "--versions", "clean,tel"]
    assert train.main(args + ["--cross", "emodb:ravdess"]) == 0
    rep = json.loads((tmp_path / "reports" / "cv_default__cross_emodb_ravdess.json").read_text())
    assert rep["train_corpora"] == ["emodb"] and rep["test_corpus"] == "ravdess"
    assert rep["clean_16k"]["n"] == 40 and abs(sum(rep["clean_16k"]["predicted"].values()) - 1) < 1e-3
    assert rep["continuous_16k"]["speaker_utterances"] == 40 and "mixed_timeline" in rep["continuous_mulaw_8k"]
    assert set(rep["calibration_clean_16k"]) >= {"temperature", "ece", "ece_after"}
    ev = eval_summary({"protocol": "x"}, recipe("default"), tmp_path / "reports")
    assert ev["cross_emodb_ravdess_16k"]["accuracy"] == rep["clean_16k"]["accuracy"]
    assert ev["cross_emodb_ravdess_continuous_16k"]["accuracy"] == rep["continuous_16k"]["speaker_timeline"]


def test_corpus_labels_mask_only_what_another_corpus_has():
    """EmoDB clips (no calm, no surprised) leave those two out of their loss when RAVDESS is in training;
    a label no training corpus has stays in every clip's loss; one corpus alone masks nothing."""
    from types import SimpleNamespace

    from tools.training.loop import corpus_label_mask

    y = np.array([0, 1, 2, 3, 4, 5, 6, 0, 2, 3, 4, 5, 6])  # RAVDESS without surprised (7), EmoDB's six
    d = SimpleNamespace(corpus=np.array(["ravdess"] * 7 + ["emodb"] * 6), y=y)
    m = corpus_label_mask(d, np.arange(13))
    assert m.shape == (13, 8)
    assert (m[:7] == 1).all()  # RAVDESS has every label EmoDB has
    np.testing.assert_array_equal(m[7], [1, 0, 1, 1, 1, 1, 1, 1])  # calm out; surprised: nobody has it
    assert (corpus_label_mask(d, np.arange(7, 13)) == 1).all()
    only = corpus_label_mask(d, np.arange(13), ("surprised", "calm"))
    np.testing.assert_array_equal(only, m)
    assert (corpus_label_mask(d, np.arange(13), ("surprised",)) == 1).all()  # nobody has surprised
    soft = corpus_label_mask(d, np.arange(13), ("calm",), 0.3)
    np.testing.assert_allclose(soft[7], [1, 0.3, 1, 1, 1, 1, 1, 1])  # calm kept at 0.3 for EmoDB clips
    assert (soft[:7] == 1).all()
    from tools.training.recipe import RecipeError, recipe

    for bad in ({"corpus_labels": ["bored"]}, {"corpus_labels": ["all"], "label_smoothing": 0.1},
                {"corpus_labels": ["calm"], "corpus_label_weight": 1.0}, {"corpus_label_weight": 0.3}):
        with pytest.raises(RecipeError):
            recipe("default", **bad)


def test_class_weights_balance_labels_within_each_corpus():
    """--class-weight corpus: inside each corpus every label it has carries the same total weight, each
    corpus keeps its share of the loss, the mean weight is 1; unknown modes are refused."""
    from types import SimpleNamespace

    from tools.training.loop import class_weights
    from tools.training.recipe import RecipeError, recipe

    y = np.array([0] * 2 + [1] * 2 + [2] * 4 + [4] * 8 + [4] * 6 + [2] * 2 + [0] * 1)
    d = SimpleNamespace(corpus=np.array(["ravdess"] * 16 + ["emodb"] * 9), y=y)
    W = class_weights(d, np.arange(25))
    own = W[np.arange(25), y]
    assert own.mean() == pytest.approx(1.0)
    for c, labels in (("ravdess", (0, 1, 2, 4)), ("emodb", (0, 2, 4))):
        m = d.corpus == c
        totals = [own[m & (y == k)].sum() for k in labels]
        assert np.allclose(totals, totals[0])
        assert own[m].sum() == pytest.approx(m.sum())  # the corpus keeps its share
    assert own[16] < own[22] < own[24]  # EmoDB: 6 angry < 2 happy < 1 neutral clip: rarer weighs more
    assert (W[d.corpus == "emodb"][:, [1, 3, 5, 6, 7]] == 0).all()  # labels the corpus lacks weigh nothing
    # one corpus balanced: the other keeps its clips' counts (equal weights among its clips)
    W1 = class_weights(d, np.arange(25), "emodb")
    o1 = W1[np.arange(25), y]
    assert np.allclose(o1[:16], o1[0]) and o1.mean() == pytest.approx(1.0)
    e = d.corpus == "emodb"
    assert np.allclose([o1[e & (y == k)].sum() for k in (0, 2, 4)], o1[e & (y == 0)].sum())
    # half-way (power 0.5): the same order, a narrower spread, each corpus still its share
    Wh = class_weights(d, np.arange(25), "emodb", power=0.5)
    oh = Wh[np.arange(25), y]
    assert oh.mean() == pytest.approx(1.0) and np.allclose(oh[:16], oh[0])
    assert oh[16] < oh[22] < oh[24] and oh[24] / oh[16] == pytest.approx(np.sqrt(o1[24] / o1[16]))
    assert oh[e].sum() == pytest.approx(o1[e].sum())
    assert recipe("default", class_weight="corpus").class_weight == "corpus"
    assert recipe("default", class_weight="emodb").class_weight == "emodb"
    assert recipe("default", class_weight_power=0.5).class_weight_power == 0.5
    for bad in (0.0, 1.5):
        with pytest.raises(RecipeError):
            recipe("default", class_weight_power=bad)
    with pytest.raises(RecipeError):
        recipe("default", class_weight="global")


def test_label_weights_scale_one_corpus_label():
    """--label-weight emodb:sad=0.3: EmoDB's sad clips weigh 0.3 of the others (on top of any class weight),
    the clips' own labels still average 1, RAVDESS's sad is untouched; malformed entries are refused."""
    from types import SimpleNamespace

    from tools.training.loop import class_weights, scale_labels
    from tools.training.recipe import RecipeError, recipe

    sad, angry = LABELS.index("sad"), LABELS.index("angry")
    y = np.array([sad] * 4 + [angry] * 4 + [sad] * 3 + [angry] * 5)
    d = SimpleNamespace(corpus=np.array(["ravdess"] * 8 + ["emodb"] * 8), y=y)
    idx = np.arange(16)
    rcp = recipe("default", label_weights=["emodb:sad=0.3"])
    assert rcp.label_weight_map() == {("emodb", "sad"): 0.3}
    W = scale_labels(d, idx, None, rcp.label_weight_map())
    own = W[idx, y]
    assert own.mean() == pytest.approx(1.0)
    assert own[8] == pytest.approx(0.3 * own[0]) and own[11] == pytest.approx(own[0])  # EmoDB sad; EmoDB angry
    assert np.allclose(own[:8], own[0])  # RAVDESS untouched
    B = class_weights(d, idx, "emodb")
    Wb = scale_labels(d, idx, B, rcp.label_weight_map())
    ratio = Wb[idx, y] / B[idx, y]
    assert np.allclose(ratio[8:11], 0.3 * ratio[0]) and np.allclose(ratio[11:], ratio[0])
    assert scale_labels(d, idx, B, {}) is B and scale_labels(d, idx, None, {}) is None
    for bad in ("emodb:sad", "emodb:bored=0.3", "tess:sad=0.3", "emodb:sad=-1", "emodb:sad=x"):
        with pytest.raises(RecipeError, match="corpus:label=w"):
            recipe("default", label_weights=[bad])


def test_a_malformed_label_weight_is_one_line_and_exit_2(capsys):
    from tools import train

    assert train.main(["--label-weight", "emodb:sad", "--cv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "corpus:label=w" in err[0]


@pytest.mark.train
@pytest.mark.slow
def test_class_weighted_fit_passes_each_windows_weight(tmp_path, corpus, monkeypatch):
    """With --class-weight corpus every epoch's fit gets one weight per window, the clip's label weight
    (straddling windows: their targets' mix), and training without it passes none."""
    pytest.importorskip("tensorflow")
    from tools.datasets import ravdess_items
    from tools.training import loop
    from tools.training.data import Data
    from tools.training.recipe import recipe
    from tools.training.windows import norm_config

    seen, build = [], loop.build_model

    def build_and_watch(r, seed, *rest):
        m = build(r, seed, *rest)
        fit_once = m.fit

        def fit_and_record(X, y, **k):
            seen.append((np.array(y), k.get("sample_weight")))
            return fit_once(X, y, **k)

        m.fit = fit_and_record
        return m

    monkeypatch.setattr(loop, "build_model", build_and_watch)
    for mode in ("corpus", "none"):
        rcp = recipe("default", epochs=2, class_weight=mode)
        data = Data(ravdess_items(corpus), rcp, cache_dir=str(tmp_path / "cache"))
        # the fixture is balanced: leave out half of one label's clips
        first = np.flatnonzero(data.y == data.y[0])
        tr = np.setdiff1d(np.arange(len(data.items)), first[: len(first) // 2])
        seen.clear()
        loop.fit(data, tr, rcp, norm_config(rcp, *data.prior(tr)), seed=3)
        assert len(seen) == 2
        if mode == "none":
            assert all(sw is None for _, sw in seen)
            continue
        W = loop.class_weights(data, tr)
        for yy, sw in seen:
            assert sw is not None and sw.shape == (len(tr),)
            np.testing.assert_allclose(sw, (yy * W).sum(1), rtol=1e-6)
        assert np.ptp(seen[0][1]) > 0.1  # the rarer label's windows weigh more


def test_masked_crossentropy_is_a_softmax_over_the_allowed_labels():
    """Renormalising the probabilities over the allowed labels equals a softmax over their logits, and
    the left-out labels get no gradient (an EmoDB clip does not push "calm" down)."""
    tf = pytest.importorskip("tensorflow")
    from tools.training.loop import masked_crossentropy

    rng = np.random.default_rng(3)
    z = tf.Variable(rng.normal(size=(4, 8)).astype(np.float32))
    t = np.eye(8, dtype=np.float32)[[0, 2, 4, 6]]
    mask = np.ones((4, 8), np.float32)
    mask[:, [1, 7]] = 0.0
    with tf.GradientTape() as tape:
        loss = masked_crossentropy(tf.constant(np.concatenate([t, mask], 1)), tf.nn.softmax(z))
        total = tf.reduce_sum(loss)
    allowed = [0, 2, 3, 4, 5, 6]
    zz = z.numpy()[:, allowed]
    ref = -np.log(np.exp(zz[np.arange(4), [0, 1, 3, 5]]) / np.exp(zz).sum(1))
    np.testing.assert_allclose(loss.numpy(), ref, rtol=1e-4)
    g = tape.gradient(total, z).numpy()
    assert np.abs(g[:, [1, 7]]).max() < 1e-5 and np.abs(g[:, allowed]).max() > 0.05
    # a mask mixed by mixup (a fraction) or a target on a masked label lets that label in again
    mixed = mask.copy()
    mixed[0, 1] = 0.3
    l2 = masked_crossentropy(tf.constant(np.concatenate([t, mixed], 1)), tf.nn.softmax(z)).numpy()
    assert l2[0] > loss.numpy()[0] and np.allclose(l2[1:], loss.numpy()[1:])


@pytest.mark.train
def test_head_crossentropy_trains_each_clip_on_its_own_corpus_head():
    """A clip's loss is the cross-entropy of its own corpus's head; the other head gets no gradient
    from it, and label smoothing smooths the target as Keras does."""
    tf = pytest.importorskip("tensorflow")
    from tools.training.loop import head_crossentropy

    rng = np.random.default_rng(4)
    z = tf.Variable(rng.normal(size=(4, 2, 8)).astype(np.float32))
    t = np.eye(8, dtype=np.float32)[[3, 3, 5, 0]]
    c = np.eye(2, dtype=np.float32)[[0, 1, 1, 0]]
    with tf.GradientTape() as tape:
        p = tf.reshape(tf.nn.softmax(z, axis=-1), (4, 16))
        loss = head_crossentropy(2)(tf.constant(np.concatenate([t, c], 1)), p)
        total = tf.reduce_sum(loss)
    probs = tf.nn.softmax(z, axis=-1).numpy()
    own = probs[np.arange(4), [0, 1, 1, 0]]
    np.testing.assert_allclose(loss.numpy(), -np.log(own[np.arange(4), [3, 3, 5, 0]]), rtol=1e-4)
    g = tape.gradient(total, z).numpy()
    other = g[np.arange(4), [1, 0, 0, 1]]
    assert np.abs(other).max() < 1e-6 and np.abs(g[np.arange(4), [0, 1, 1, 0]]).max() > 0.05
    ref = tf.keras.losses.CategoricalCrossentropy(label_smoothing=0.1, reduction="none")(t, own).numpy()
    got = head_crossentropy(2, 0.1)(tf.constant(np.concatenate([t, c], 1)),
                                    tf.constant(probs.reshape(4, 16))).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4)


def test_head_weights_are_checked_and_normalised():
    """--head-weights gives each training corpus's head its share of the shipped mix; bad entries and
    combinations the heads cannot train are one RecipeError each."""
    from tools.training.recipe import RecipeError, recipe

    assert recipe("default", heads="corpus").head_weight_list(["ravdess", "emodb"]) == [0.5, 0.5]
    r = recipe("default", heads="corpus", head_weights=["ravdess=3", "emodb=1"])
    assert r.head_weight_list(["ravdess", "emodb"]) == [0.75, 0.25]
    assert recipe("default", heads="corpus", head_weights=["ravdess=1"]).head_weight_list(
        ["ravdess", "emodb"]) == [1.0, 0.0]
    for bad in (dict(head_weights=["ravdess=1"]), dict(heads="corpus", head_weights=["tess=1"]),
                dict(heads="corpus", head_weights=["ravdess=x"]), dict(heads="corpus", head_weights=["emodb=0"]),
                dict(heads="corpus", mixup=0.2), dict(heads="corpus", corpus_labels=["calm"]),
                dict(heads="both")):
        with pytest.raises(RecipeError):
            recipe("default", **bad)


@pytest.mark.train
@pytest.mark.slow
def test_a_head_per_corpus_trains_scores_each_head_and_ships_their_mix(tmp_path, data_root):
    """--heads corpus: the CV reports and saves each head's clip probabilities beside the mix, the mix is
    the weighted mean of the heads, and the shipped model is one network with one output that TFLite runs."""
    pytest.importorskip("tensorflow")
    from streamer.config import load_meta
    from tools import cv_members, train

    npz = tmp_path / "h.npz"
    heads = ["--heads", "corpus", "--head-weights", "ravdess=0.75,emodb=0.25", "--versions", "clean,tel"]
    assert train.main(_args(tmp_path, data_root, "--model", "default", "--cv", "--folds", "1", "--no-continuous",
                            "--seeds-cv", "1", "--save-probs", str(npz), *heads)) == 0
    rep = json.loads((tmp_path / "reports" / "cv_default.json").read_text())
    assert 0.0 <= rep["clean_16k_head_ravdess"]["accuracy"] <= 1.0 and "mulaw_8k_head_emodb" in rep
    probs, _, _ = cv_members.load([str(npz)])
    mix = 0.75 * probs["clean#ravdess/0"] + 0.25 * probs["clean#emodb/0"]
    np.testing.assert_allclose(probs["clean/0"], mix, atol=1e-5)
    assert np.abs(probs["clean#ravdess/0"] - probs["clean#emodb/0"]).max() > 1e-4
    # any other mix is scored from the saved heads without training again
    other = cv_members.mix_heads(probs, {"ravdess": 1.0, "emodb": 3.0})
    np.testing.assert_allclose(other["clean/0"], 0.25 * probs["clean#ravdess/0"] + 0.75 * probs["clean#emodb/0"],
                               atol=1e-6)
    assert not any("#" in k for k in other)
    assert cv_members.main([str(npz), "--head-weights", "ravdess=1,emodb=3", "--json", str(tmp_path / "m.json")]) == 0
    assert cv_members.main([str(npz), "--head-weights", "tess=1"]) == 2
    assert train.main(_args(tmp_path, data_root, "--model", "default", "--seeds", "2", *heads)) == 0
    meta = load_meta(tmp_path / "model" / "emotion.tflite")
    assert meta.extra["training"]["recipe"]["heads"] == "corpus"
    assert meta.extra["tflite"]["keras_agreement"]["max_abs_diff"] < 0.05
    p = _run_tflite(tmp_path / "model" / "emotion.tflite",
                    np.random.default_rng(2).standard_normal((3, meta.features.window_steps, meta.features.n_channels)))
    assert p.shape == (3, len(LABELS))
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-4)


@pytest.mark.train
def test_gradient_reversal_passes_values_and_reverses_the_scaled_gradient():
    """The adversary's layer is the identity forward; backward it multiplies the gradient by -scale."""
    tf = pytest.importorskip("tensorflow")
    from tools.training.network import gradient_reversal

    layer = gradient_reversal()
    x = tf.Variable(np.random.default_rng(1).normal(size=(3, 5)).astype(np.float32))
    layer(x)
    for scale in (0.0, 0.25):
        layer.scale.assign(scale)
        with tf.GradientTape() as tape:
            y = layer(x)
            total = tf.reduce_sum(y * np.arange(5, dtype=np.float32))
        np.testing.assert_allclose(y.numpy(), x.numpy())
        np.testing.assert_allclose(tape.gradient(total, x).numpy(), -scale * np.tile(np.arange(5.0), (3, 1)),
                                   atol=1e-7)


def test_adversary_targets_ramp_and_recipe_checks(corpus, tmp_path):
    """--adversary speaker: one class per training speaker (none with one speaker); the reversed gradient's
    scale ramps from 0 to the weight; combinations it cannot train are one RecipeError each."""
    from tools.training.loop import adversary_scale, adversary_targets
    from tools.training.recipe import RecipeError, recipe

    class D:
        speaker = np.array(["a", "b", "a", "c", "c"])
        corpus = np.array(["ravdess", "ravdess", "ravdess", "emodb", "emodb"])

    r = recipe("default", adversary="speaker_all", adversary_weight=0.2)
    np.testing.assert_array_equal(adversary_targets(D, np.array([0, 1, 2, 3]), r), [0, 1, 0, 2])
    assert adversary_targets(D, np.array([0, 2]), r) is None
    # within each corpus: the target speaker, and only the speakers of the clip's own corpus allowed
    t = adversary_targets(D, np.array([0, 1, 3]), recipe("default", adversary="speaker"))
    np.testing.assert_array_equal(t, [[1, 0, 0, 1, 1, 0], [0, 1, 0, 1, 1, 0], [0, 0, 1, 0, 0, 1]])
    # one corpus's speakers only: the other corpus's clips have no target (no loss) and no class
    t = adversary_targets(D, np.array([0, 1, 3]), recipe("default", adversary="speaker", adversary_corpora=["ravdess"]))
    np.testing.assert_array_equal(t, [[1, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(adversary_targets(D, np.arange(5), recipe("default", adversary="corpus")),
                                  [1, 1, 1, 0, 0])
    assert adversary_targets(D, np.arange(3), recipe("default", adversary="corpus")) is None
    assert adversary_targets(D, np.arange(5), recipe("default")) is None
    ramp = [adversary_scale(r, e) for e in range(r.epochs)]
    assert ramp[0] == 0.0 and np.all(np.diff(ramp) > 0) and 0.19 < ramp[-1] < 0.2
    for bad in (dict(adversary="actor"), dict(adversary="speaker", adversary_weight=0.0),
                dict(adversary="speaker", heads="corpus"), dict(adversary="speaker", mixup=0.2),
                dict(adversary="speaker", split_labels=["emodb:sad"]), dict(adversary="corpus", adversary_corpora=["emodb"]),
                dict(adversary="speaker", adversary_corpora=["tess"])):
        with pytest.raises(RecipeError):
            recipe("default", **bad)


@pytest.mark.train
@pytest.mark.slow
def test_a_speaker_adversary_trains_the_trunk_and_ships_the_emotion_output_only(tmp_path, data_root):
    """--adversary speaker (speakers told apart within each corpus): the adversary learns, the reversal reaches the trunk, and the exported model is
    one network with the 8 emotion outputs that TFLite runs."""
    pytest.importorskip("tensorflow")
    from streamer.config import load_meta
    from tools import train
    from tools.training import loop
    from tools.training.data import Data
    from tools.training.recipe import recipe
    from tools.training.windows import norm_config

    from tools.training.data import load_corpora

    def trained(weight):
        rcp = recipe("default", epochs=3, adversary="speaker", adversary_weight=weight, train_versions=["clean"],
                     corpora=["ravdess", "emodb"])
        data = Data(load_corpora(data_root, rcp.corpora), rcp, cache_dir=str(tmp_path / "cache"))
        tr = np.arange(len(data.items))
        model, info = loop.fit(data, tr, rcp, norm_config(rcp, *data.prior(tr)), seed=2)
        assert info["epochs_run"] == 3
        return model, loop.build_model(rcp, 2, adversary=loop.adversary_targets(data, tr, rcp).shape[1] // 2)

    faint, start = trained(1e-9)
    strong, _ = trained(1.0)
    assert len(strong.outputs) == 1 and strong.outputs[0].shape[-1] == len(LABELS)
    # the adversary learned (its layer is part of the training network, not of the shipped one) ...
    assert not any(layer.name.startswith("adversary") for layer in strong.layers)
    # ... and with the same seed and data, the trunk differs only by the reversed gradient's scale
    conv = [w for w in faint.get_weights() if w.ndim == 3]
    conv_strong = [w for w in strong.get_weights() if w.ndim == 3]
    conv_start = [w for w in start.get_weights() if w.ndim == 3]
    assert max(float(np.abs(a - b).max()) for a, b in zip(conv, conv_start)) > 1e-3
    assert max(float(np.abs(a - b).max()) for a, b in zip(conv, conv_strong)) > 1e-4
    assert train.main(_args(tmp_path, data_root, "--model", "default", "--adversary", "speaker",
                            "--versions", "clean,tel")) == 0
    meta = load_meta(tmp_path / "model" / "emotion.tflite")
    assert meta.extra["training"]["recipe"]["adversary"] == "speaker"
    p = _run_tflite(tmp_path / "model" / "emotion.tflite",
                    np.random.default_rng(2).standard_normal((3, meta.features.window_steps, meta.features.n_channels)))
    assert p.shape == (3, len(LABELS))
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-4)


def test_split_labels_move_one_corpus_label_to_its_own_output():
    """--split-labels emodb:sad: EmoDB's sad clips (and a straddling window's sad share) target an output of
    their own; other corpora and labels keep theirs; bad entries are one RecipeError each."""
    from tools.training.loop import split_targets
    from tools.training.recipe import RecipeError, recipe

    sad = LABELS.index("sad")
    r = recipe("default", split_labels=["emodb:sad"])
    assert r.split_outputs() == [("emodb", sad)]
    assert len(recipe("default", split_labels=["emodb:all"]).split_outputs()) == len(LABELS)
    y = np.zeros((3, len(LABELS)), np.float32)
    y[0, sad] = y[1, sad] = 1.0
    y[2, sad], y[2, 0] = 0.4, 0.6
    out = split_targets(y, np.array(["ravdess", "emodb", "emodb"]), r.split_outputs())
    assert out.shape == (3, len(LABELS) + 1)
    np.testing.assert_allclose(out.sum(1), 1.0)
    assert out[0, sad] == 1.0 and out[0, -1] == 0.0
    assert out[1, sad] == 0.0 and out[1, -1] == 1.0
    assert out[2, sad] == 0.0 and out[2, -1] == np.float32(0.4) and out[2, 0] == np.float32(0.6)
    for bad in (["tess:sad"], ["emodb:sadness"], ["emodb:sad", "emodb:all"]):
        with pytest.raises(RecipeError):
            recipe("default", split_labels=bad)
    with pytest.raises(RecipeError):
        recipe("default", split_labels=["emodb:sad"], heads="corpus")


@pytest.mark.train
def test_merged_split_model_adds_each_extra_output_to_its_label():
    """The shipped network of a split-label recipe has the labels' outputs only: each extra output's
    probability is added to its label's, and it is fixed (not trained)."""
    pytest.importorskip("tensorflow")
    from tools.training.network import build_model, merge_split_model
    from tools.training.recipe import recipe

    r = recipe("default", split_labels=["emodb:sad", "emodb:angry"])
    net = build_model(r, 1, extra=2)
    merged = merge_split_model(net, [k for _, k in r.split_outputs()])
    X = np.random.default_rng(0).standard_normal((4, r.features.window_steps, r.features.n_channels)).astype(np.float32)
    p9, p8 = np.asarray(net(X)), np.asarray(merged(X))
    assert p9.shape == (4, len(LABELS) + 2) and p8.shape == (4, len(LABELS))
    want = p9[:, : len(LABELS)].copy()
    want[:, LABELS.index("sad")] += p9[:, -2]
    want[:, LABELS.index("angry")] += p9[:, -1]
    np.testing.assert_allclose(p8, want, atol=1e-6)
    assert not merged.get_layer("merge_split").trainable_weights


def test_refit_keeps_its_folders_gate_or_takes_the_shipped_one(tmp_path):
    """The final fit keeps the speech detector: from the --out folder's own emotion.json, or, in a fresh
    folder, from the shipped model's, whose detector file is copied beside the new model."""
    from tools.training.export import _previous_meta

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    prev = _previous_meta(fresh, "emotion", log=lambda *a: None)
    shipped = json.loads((ROOT / "model" / "emotion.json").read_text())
    assert prev["gate"]["detector"] == shipped["gate"]["detector"]
    assert (fresh / "speech.tflite").read_bytes() == (ROOT / "model" / "speech.tflite").read_bytes()
    own = tmp_path / "own"
    own.mkdir()
    (own / "emotion.json").write_text(json.dumps({"gate": {"abs_db": -50.0}}))
    assert _previous_meta(own, "emotion") == {"gate": {"abs_db": -50.0}}
    assert not (own / "speech.tflite").exists()


def test_soft_corpus_label_weight_lowers_the_labels_logit_in_that_clips_loss():
    """--corpus-label-weight w: a label kept at weight w is a softmax with its logit lowered by log(1/w);
    the clip still pushes it down, more weakly than with the full label."""
    tf = pytest.importorskip("tensorflow")
    from tools.training.loop import masked_crossentropy

    rng = np.random.default_rng(5)
    z = tf.Variable(rng.normal(size=(3, 8)).astype(np.float32))
    t = np.eye(8, dtype=np.float32)[[0, 3, 5]]
    full, soft = np.ones((3, 8), np.float32), np.ones((3, 8), np.float32)
    soft[:, 1] = 0.3
    grads = []
    for m in (full, soft):
        with tf.GradientTape() as tape:
            loss = masked_crossentropy(tf.constant(np.concatenate([t, m], 1)), tf.nn.softmax(z))
            total = tf.reduce_sum(loss)
        grads.append(tape.gradient(total, z).numpy())
        if m is soft:
            zz = z.numpy().copy()
            zz[:, 1] += np.log(0.3)
            ref = -np.log(np.exp(zz[np.arange(3), [0, 3, 5]]) / np.exp(zz).sum(1))
            np.testing.assert_allclose(loss.numpy(), ref, rtol=1e-4)
    # calm's gradient (pushing its logit down) stays positive and is smaller under the soft weight
    assert (grads[1][:, 1] > 1e-4).all() and (grads[1][:, 1] < grads[0][:, 1]).all()
    from tools.training.recipe import recipe

    assert recipe("default", corpus_labels=["calm"], corpus_label_weight=0.3).corpus_label_weight == 0.3


@pytest.mark.train
@pytest.mark.slow
def test_corpus_labels_recipe_trains_on_two_corpora_and_records_it(tmp_path, data_root):
    """--corpus-labels trains the two-corpus recipe (EmoDB clips without calm and surprised in their loss),
    converts it, and the shipped metadata's recipe says so; a refit over a model with a speech detector
    keeps the detector (its own network on frame features, not the emotion networks')."""
    pytest.importorskip("tensorflow")

    from streamer.config import load_meta
    from tools import train

    # a fresh --out folder: the shipped model's gate and speech detector come along
    out = tmp_path / "model"
    shipped = json.loads((ROOT / "model" / "emotion.json").read_text())
    assert train.main(_args(tmp_path, data_root, "--model", "default", "--seeds", "1", "--corpus-labels",
                            "--versions", "clean,tel", "--narrowband-prior", "none")) == 0
    meta = load_meta(tmp_path / "model" / "emotion.tflite")
    rec = meta.extra["training"]["recipe"]
    assert rec["corpus_labels"] == ["all"] and rec["corpora"] == ["ravdess", "emodb"]
    det = meta.gate.detector
    assert det is not None and det.threshold == shipped["gate"]["detector"]["threshold"]
    assert (tmp_path / "model" / "speech.tflite").read_bytes() == (ROOT / "model" / "speech.tflite").read_bytes()
    p = _run_tflite(tmp_path / "model" / "emotion.tflite",
                    np.zeros((1, meta.features.window_steps, meta.features.n_channels)))
    np.testing.assert_allclose(p.sum(), 1.0, atol=1e-4)
    # the narrowband prior is added to the trained model without retraining (its weights stay)
    (tmp_path / "reports" / "cv_default.json").write_text((ROOT / "model" / "reports" / "cv_default.json").read_text())
    weights = (out / "emotion.tflite").read_bytes()
    again = ["--corpus-labels", "--versions", "clean,tel", "--refresh-meta"]
    assert train.main(_args(tmp_path, data_root, "--model", "default", *again, "--narrowband-prior", "model")) == 0
    nb = load_meta(out / "emotion.tflite")
    assert (out / "emotion.tflite").read_bytes() == weights and nb.normalisation.mean == meta.normalisation.mean
    assert len(nb.normalisation.narrowband_mean) == meta.features.n_channels
    assert nb.extra["training"]["recipe"]["narrowband_prior"] == "model"
    # other clips than the model's (RAVDESS alone): refused, the model left as it is
    before = (out / "emotion.json").read_text()
    assert train.main(_args(tmp_path, data_root, "--model", "default", *again, "--narrowband-prior", "model",
                            "--corpora", "ravdess")) == 2
    assert (out / "emotion.json").read_text() == before


def test_narrowband_prior_comes_from_the_telephone_copies_and_starts_their_windows(corpus, tmp_path):
    """``narrowband_prior``: the model carries the telephone copies' statistics; ``train`` also starts
    training's telephone windows from them, ``model`` leaves training as it was."""
    from tools.datasets import ravdess_items
    from tools.training.data import Data
    from tools.training.loop import epoch_set
    from tools.training.recipe import RecipeError, recipe
    from tools.training.windows import eval_windows, fold_norm, training_meta

    base = recipe("default", train_versions=["tel"], straddle=0.0, context=0.0, spec_mask=False, narrowband_prior="none")
    data = Data(ravdess_items(corpus, actors=[1, 2]), base, cache_dir=str(tmp_path / "cache"), log=None)
    tr = np.arange(len(data.items))
    assert fold_norm(data, base, tr).narrowband_mean is None
    ncfg = fold_norm(data, base.with_(narrowband_prior="train"), tr)
    np.testing.assert_allclose(ncfg.narrowband_mean, data.prior(tr, "tel")[0])
    # the telephone band's missing highs move the cepstrum: the two priors differ
    assert np.abs(np.array(ncfg.narrowband_mean) - np.array(ncfg.mean)).max() > 0.5

    def windows(r):
        return epoch_set(data, tr, r, ncfg, np.random.default_rng(0))[0]

    plain, model_only, trained = (windows(base), windows(base.with_(narrowband_prior="model")),
                                  windows(base.with_(narrowband_prior="train")))
    np.testing.assert_array_equal(plain, model_only)
    assert np.abs(trained - plain).max() > 0.1
    clean = base.with_(train_versions=["clean"], narrowband_prior="train")
    np.testing.assert_array_equal(windows(clean), windows(base.with_(train_versions=["clean"])))
    # evaluation: the telephone copies stream from the narrowband prior, the clean ones do not
    meta = training_meta(base, ncfg)
    wide = training_meta(base, fold_norm(data, base, tr))
    tel_nb, tel_wide = eval_windows(data, tr[:2], "tel", meta), eval_windows(data, tr[:2], "tel", wide)
    assert np.abs(tel_nb[0][0].feats - tel_wide[0][0].feats).max() > 0.1
    cl_nb, cl_wide = eval_windows(data, tr[:2], "clean", meta), eval_windows(data, tr[:2], "clean", wide)
    np.testing.assert_array_equal(cl_nb[0][0].feats, cl_wide[0][0].feats)
    # the telephone copies as a 16 kHz source: "wide" is the wideband prior, "detect" the band detector,
    # which hears the empty highs within the first second of speech and reaches the same windows
    np.testing.assert_array_equal(eval_windows(data, tr[:2], "tel", meta, band="wide")[0][0].feats, tel_wide[0][0].feats)
    np.testing.assert_allclose(eval_windows(data, tr[:2], "tel", meta, band="detect")[0][0].feats, tel_nb[0][0].feats,
                               atol=1e-6)
    np.testing.assert_array_equal(eval_windows(data, tr[:2], "clean", meta, band="detect")[0][0].feats, cl_nb[0][0].feats)
    with pytest.raises(ValueError, match="band is rate, detect or wide"):
        eval_windows(data, tr[:2], "tel", meta, band="auto")
    with pytest.raises(RecipeError, match="narrowband prior"):
        recipe("default", narrowband_prior="yes")
    with pytest.raises(RecipeError, match="running normalisation"):
        recipe("default", narrowband_prior="model", norm="fixed")


def test_cv_members_merges_runs_of_the_same_seeds_on_other_folds(tmp_path):
    """``--folds 1`` and ``--folds 2,3`` of one recipe and seeds are one CV: each file says its folds
    (older files take them after a colon); a fold given twice, or folds with different model counts, are refused."""
    from tools import cv_members

    rng = np.random.default_rng(0)

    def run(name, folds, seeds=(1, 2), stored=True):
        arrays = {}
        for i, _ in enumerate(folds):
            y = rng.integers(0, 8, 6)
            arrays[f"y/{i}"] = y
            arrays[f"clean/{i}"] = rng.dirichlet(np.ones(8), (len(seeds), 6)).astype(np.float32)
        if stored:
            arrays["folds"] = np.array(folds)
        p = tmp_path / f"{name}.npz"
        np.savez(p, seeds=np.array(seeds), recipe="{}", **arrays)
        return str(p)

    a, b = run("a", [1]), run("b", [2, 3])
    probs, ys, seeds = cv_members.load([a, b])
    assert sorted(ys) == [0, 1, 2] and seeds == [1, 2]
    np.testing.assert_array_equal(probs["clean/2"], np.load(b)["clean/1"])
    old = run("old", [4, 5], stored=False)
    probs, ys, _ = cv_members.load([a, b, old + ":4,5"])
    assert sorted(ys) == [0, 1, 2, 3, 4]
    assert cv_members.main([a, b, old + ":4,5", "--json", str(tmp_path / "m5.json")]) == 0  # the colon too
    with pytest.raises(ValueError, match="repeats seeds"):
        cv_members.load([a, run("again", [1])])
    with pytest.raises(ValueError, match="different numbers of models"):
        cv_members.load([a, run("three", [2], seeds=(1, 2, 3))])
    with pytest.raises(ValueError, match="holds 2 folds, not 1"):
        cv_members.load([old + ":4"])
    # --seeds keeps those seeds' members, in the runs' order; a seed no run has is refused
    five = run("five", [1], seeds=(1, 2, 3, 4, 5))
    probs, ys, seeds = cv_members.load([five])
    sub, kept = cv_members.only_seeds(probs, seeds, [2, 4])
    assert kept == [2, 4]
    np.testing.assert_array_equal(sub["clean/0"], np.load(five)["clean/0"][[1, 3]])
    with pytest.raises(ValueError, match=r"no models of seeds \[6\]"):
        cv_members.only_seeds(probs, seeds, [1, 6])
    assert cv_members.main([five, "--seeds", "1,2,3", "--json", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["seeds"] == [1, 2, 3]
    assert cv_members.main([five, "--seeds", "7"]) == 2
    # the geometric mean ranks labels by the mean log-probability
    p = np.array([[[0.9, 0.1]], [[0.9, 0.1]], [[0.001, 0.999]]])
    assert cv_members.combine(p).argmax(-1)[0] == 0 and cv_members.combine(p, geometric=True).argmax(-1)[0] == 1
