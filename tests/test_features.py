"""Feature parity: streamed in random blocks == processed at once == librosa."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from streamer.config import FeatureConfig, GateConfig, NormConfig
from streamer.errors import ModelError
from streamer.features import FrameFeaturizer, WindowAssembler, frame_features, window_means, window_starts
from streamer.gate import SpeechGate
from streamer.normalise import Normaliser
from tests.conftest import read_mono


@pytest.mark.parametrize("k,pitch", [(1, False), (2, False), (5, False), (150, False), (1, True)])
def test_blocks_give_the_same_windows_as_the_whole_clip(clips, k, pitch):
    cfg = FeatureConfig(sub_window_frames=k, hop_s=0.5, pitch=pitch)
    y, sr = read_mono(clips["angry"])
    y = np.concatenate([y, y])  # long enough for several windows
    frames, _ = frame_features(y, cfg)
    whole = window_means(frames, window_starts(len(frames), cfg), cfg)

    rng = np.random.default_rng(k)
    feat, asm = FrameFeaturizer(cfg), WindowAssembler(cfg, cfg.n_channels)
    got, i = [], 0
    while i < len(y):
        n = int(rng.integers(1, 4000))
        m, _ = feat.push(y[i : i + n])
        got.append(asm.push(m)[1])
        i += n
    streamed = np.concatenate(got)
    assert streamed.shape == whole.shape and len(whole) >= 4
    # float32 BLAS sums in a different order for different block sizes: equal to 1e-5 relative
    np.testing.assert_allclose(streamed, whole, rtol=1e-5, atol=1e-3)


def test_frame_mfcc_matches_librosa(clips):
    cfg = FeatureConfig(n_mfcc=40, n_mels=64, n_fft=1024, hop_length=320)
    y, sr = read_mono(clips["sad"])
    ours, level = frame_features(y, cfg)
    # librosa's mfcc with the same frames (center=False) and no top_db clamp (a stream cannot know
    # its loudest frame in advance, so the model's features never clamp)
    S = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=1024, hop_length=320, n_mels=64, center=False, power=2.0)
    ref = librosa.feature.mfcc(S=librosa.power_to_db(S, ref=1.0, amin=1e-10, top_db=None), n_mfcc=40).T
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=2e-3 * np.abs(ref).max())
    rms = librosa.feature.rms(y=y, frame_length=1024, hop_length=320, center=False)[0]
    np.testing.assert_allclose(level, 10 * np.log10(rms**2 + 1e-12), atol=1e-2)


@pytest.mark.parametrize("f0", [85.0, 140.0, 230.0, 410.0])
def test_pitch_channels_find_the_fundamental_of_a_harmonic_tone(f0):
    cfg = FeatureConfig(pitch=True)
    t = np.arange(cfg.sample_rate) / cfg.sample_rate
    # a missing fundamental's worth of harmonics with falling amplitude, as a voiced vowel
    y = sum(np.sin(2 * np.pi * f0 * h * t + h) / h for h in range(1, 9)).astype(np.float32) * 0.05
    feats, _ = frame_features(y, cfg)
    assert feats.shape[1] == cfg.n_mfcc + 2 == cfg.n_channels
    np.testing.assert_allclose(2 ** feats[:, 40], f0, rtol=0.01)
    assert feats[:, 41].min() > 0.95
    noise = np.random.default_rng(0).normal(0, 0.05, cfg.sample_rate).astype(np.float32)
    assert np.median(frame_features(noise, cfg)[0][:, 41]) < 0.4
    # the MFCC channels are those of a model without pitch
    np.testing.assert_array_equal(feats[:, :40], frame_features(y, FeatureConfig())[0])


def test_pitch_agrees_with_librosa_pyin_on_voiced_speech(clips):
    cfg = FeatureConfig(pitch=True)
    agree = []
    for name in ("angry", "sad", "neutral"):
        y, sr = read_mono(clips[name])
        feats, _ = frame_features(y, cfg)
        f0, voiced, prob = librosa.pyin(y, fmin=60, fmax=500, sr=sr, frame_length=1024, hop_length=320,
                                        center=False)
        n = min(len(f0), len(feats))
        # frames both call clearly voiced (pyin flags some frames voiced at probability 0.01)
        v = voiced[:n] & (prob[:n] > 0.1) & (feats[:n, 41] > 0.5)
        assert v.sum() > 20
        semitones = 12 * np.abs(feats[:n, 40][v] - np.log2(f0[:n][v]))
        agree.append(np.mean(semitones < 1.0))
        # voicing strength separates pyin's voiced from unvoiced frames
        assert np.median(feats[:n, 41][voiced[:n]]) > np.median(feats[:n, 41][~voiced[:n]]) + 0.2
    assert min(agree) > 0.95, agree


def test_window_means_equal_plain_means():
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(400, 3)).astype(np.float32)
    cfg = FeatureConfig(sub_window_frames=4, window_s=1.0, hop_s=0.3, hop_length=160, sample_rate=16000)
    starts = window_starts(len(frames), cfg)
    got = window_means(frames, starts, cfg)
    for w, s in enumerate(starts):
        block = frames[s : s + cfg.window_frames].reshape(-1, 4, 3).mean(axis=1)
        np.testing.assert_allclose(got[w], block, atol=1e-5)


def test_short_stream_gets_one_short_window():
    cfg = FeatureConfig()
    asm = WindowAssembler(cfg, 2)
    starts, _ = asm.push(np.ones((60, 2), np.float32))
    assert len(starts) == 0
    starts, feats, n = asm.flush()
    assert list(starts) == [0] and feats.shape == (1, 60, 2) and n == 60


def test_gate_marks_silence_and_speech(clips):
    cfg = FeatureConfig()
    y, sr = read_mono(clips["angry"])
    y = np.concatenate([np.zeros(sr * 2, np.float32), y])
    _, level = frame_features(y, cfg)
    flags = SpeechGate(GateConfig(), cfg)(level)
    lead = int(2 * cfg.frame_rate) - 5
    assert not flags[:lead].any()
    assert flags[lead:].mean() > 0.3


def test_running_normaliser_blends_prior_and_stream():
    norm = Normaliser(NormConfig(kind="running", mean=[0.0, 0.0], std=[1.0, 1.0], prior_frames=10), 2)
    x = np.full((30, 2), 4.0)
    st = norm.push(x, np.ones(30, bool))
    mean, std = st.at(np.array([9, 29]))
    np.testing.assert_allclose(mean[:, 0], [2.0, 3.0])
    # with all-silent frames the statistics stay at the prior
    norm.reset()
    mean, _ = norm.push(x, np.zeros(30, bool)).at(np.array([29]))
    np.testing.assert_allclose(mean, 0.0)


def test_per_band_prior_weights_let_some_bands_follow_the_stream_sooner():
    norm = Normaliser(NormConfig(kind="running_mean", mean=[0.0, 0.0], std=[1.0, 1.0], prior_frames=[10, 90]), 2)
    mean, _ = norm.push(np.full((10, 2), 4.0), np.ones(10, bool)).at(np.array([9]))
    np.testing.assert_allclose(mean[0], [2.0, 0.4])
    with pytest.raises(ModelError, match="prior_frames"):
        Normaliser(NormConfig(kind="running", prior_frames=[10, 20, 30]), 2)


def test_running_mean_normaliser_adapts_mean_only():
    norm = Normaliser(NormConfig(kind="running_mean", mean=[0.0, 0.0], std=[2.0, 0.5], prior_frames=10), 2)
    x = np.random.default_rng(0).normal(4.0, 3.0, size=(30, 2))
    st = norm.push(x, np.ones(30, bool))
    mean, std = st.at(np.array([9, 29]))
    np.testing.assert_allclose(mean[1], 30 * x.mean(0) / 40)
    np.testing.assert_allclose(std, [[2.0, 0.5], [2.0, 0.5]])  # the prior's spread, whatever the stream's
    w = norm.apply(x[None, :5], mean[1:], std[1:])
    np.testing.assert_allclose(w[0], (x[:5] - mean[1]) / [2.0, 0.5], rtol=1e-5)


@pytest.mark.parametrize("cfg", [FeatureConfig(), FeatureConfig(sample_rate=8000, n_fft=256, hop_length=80,
                                                                  n_mels=40, n_mfcc=20, fmin=50.0, fmax=3800.0)])
def test_mel_basis_and_dct_match_librosa_and_scipy(cfg):
    import scipy.fft

    from streamer.features import dct_matrix, mel_basis

    ref = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
    np.testing.assert_allclose(mel_basis(cfg), ref.T, atol=1e-7)
    x = np.random.default_rng(0).normal(size=(7, cfg.n_mels)).astype(np.float32)
    np.testing.assert_allclose(x @ dct_matrix(cfg.n_mels, cfg.n_mfcc),
                               scipy.fft.dct(x, type=2, norm="ortho")[:, : cfg.n_mfcc], atol=1e-5)


def test_model_metadata_carries_per_band_priors_and_refuses_a_wrong_count(model):
    from streamer.config import ModelMeta

    meta, _ = model
    d = meta.to_dict()
    n = meta.features.n_channels
    d["normalisation"] = {**d["normalisation"], "kind": "running_mean", "prior_frames": [100.0] + [10.0] * (n - 1)}
    back = ModelMeta.from_dict(d, meta.model_path)
    assert back.normalisation.prior_frames[:2] == [100.0, 10.0]
    d["normalisation"]["prior_frames"] = [10.0] * (n + 1)
    with pytest.raises(ModelError, match="prior_frames"):
        ModelMeta.from_dict(d, meta.model_path)


def test_narrowband_prior_starts_telephone_streams_and_nothing_else():
    cfg = NormConfig(kind="running", mean=[0.0, 0.0], std=[1.0, 1.0], prior_frames=10,
                     narrowband_mean=[5.0, -5.0], narrowband_std=[2.0, 2.0])
    x = np.full((10, 2), 1.0)
    wide, _ = Normaliser(cfg, 2).push(x, np.ones(10, bool)).at(np.array([9]))
    narrow, nstd = Normaliser(cfg, 2, narrowband=True).push(x, np.ones(10, bool)).at(np.array([9]))
    np.testing.assert_allclose(wide[0], [0.5, 0.5])
    np.testing.assert_allclose(narrow[0], [3.0, -2.0])  # (10 * prior + 10 * 1) / 20
    assert nstd[0, 0] > 1.5  # the narrowband prior's spread, not the wideband one's
    # a model without one: telephone streams start from the one prior it has
    plain = NormConfig(kind="running", mean=[0.0, 0.0], std=[1.0, 1.0], prior_frames=10)
    m, _ = Normaliser(plain, 2, narrowband=True).push(x, np.ones(10, bool)).at(np.array([9]))
    np.testing.assert_allclose(m[0], [0.5, 0.5])


def test_model_metadata_carries_a_narrowband_prior_and_refuses_half_of_one(model):
    from streamer.config import ModelMeta

    meta, _ = model
    d = meta.to_dict()
    n = meta.features.n_channels
    assert "narrowband_mean" not in d["normalisation"] or d["normalisation"]["narrowband_mean"] is not None
    d["normalisation"] = {**d["normalisation"], "narrowband_mean": [0.5] * n, "narrowband_std": [2.0] * n}
    back = ModelMeta.from_dict(d, meta.model_path)
    assert back.normalisation.narrowband_std == [2.0] * n
    assert back.to_dict()["normalisation"]["narrowband_mean"] == [0.5] * n
    with pytest.raises(ModelError, match="narrowband_std has"):
        ModelMeta.from_dict({**d, "normalisation": {**d["normalisation"], "narrowband_std": [1.0] * (n - 1)}},
                            meta.model_path)
    with pytest.raises(ModelError, match="come together"):
        ModelMeta.from_dict({**d, "normalisation": {**d["normalisation"], "narrowband_std": None}}, meta.model_path)


@pytest.mark.parametrize("rate,narrow", [(8000, True), (16000, False), (44100, False)])
def test_pipeline_starts_sources_at_8_khz_from_the_narrowband_prior(model, rate, narrow):
    from dataclasses import replace

    from streamer.pipeline import Pipeline

    meta, clf = model
    n = meta.features.n_channels
    nb = replace(meta, normalisation=replace(meta.normalisation, narrowband_mean=[7.0] * n, narrowband_std=[3.0] * n))
    pipe = Pipeline(nb, clf, in_rate=rate, in_channels=2, channels="split")
    for an in pipe.analyzers:
        assert an.norm.narrowband is narrow
        mean, std = an.norm.current()
        assert bool(mean[0, 0] == 7.0) is narrow and bool(std[0, 0] == 3.0) is narrow
