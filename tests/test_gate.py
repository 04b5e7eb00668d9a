"""The energy gate: absolute floor, distance below the decaying peak, block-wise equals at once."""

from __future__ import annotations

import numpy as np

from streamer.config import FeatureConfig, GateConfig, ModelMeta, SpeechConfig, gate_dict
from streamer.gate import SpeechGate, speech_fraction

F = FeatureConfig()


def test_floor_and_distance_below_the_peak():
    gate = SpeechGate(GateConfig(abs_db=-50, rel_db=20, peak_decay_db_per_s=0.0), F)
    level = np.array([-60.0, -10.0, -25.0, -35.0, -45.0, -55.0])
    # -60 and -55 are under the floor; -35 and -45 are more than 20 dB below the -10 peak
    assert gate(level).tolist() == [False, True, True, False, False, False]


def test_peak_decays_so_quieter_speech_counts_again():
    cfg = GateConfig(abs_db=-80, rel_db=10, peak_decay_db_per_s=5.0)
    gate = SpeechGate(cfg, F)
    loud = np.full(10, -10.0)
    quiet = np.full(int(4 * F.frame_rate), -25.0)  # 15 dB below the peak: rejected at first
    flags = gate(np.concatenate([loud, quiet]))
    assert not flags[10] and flags[-1]  # after ~1 s of decay (5 dB/s) the quiet part is near enough


def test_blocks_equal_whole():
    rng = np.random.default_rng(0)
    level = rng.uniform(-90, 0, 2000)
    whole = SpeechGate(GateConfig(), F)(level)
    g = SpeechGate(GateConfig(), F)
    parts = [g(level[a : a + n]) for a, n in zip(range(0, 2000, 37), [37] * 60)]
    assert np.array_equal(np.concatenate(parts)[: len(whole)], whole[: sum(map(len, parts))])


def test_speech_fraction_of_windows():
    flags = np.array([1, 1, 0, 0, 1, 0], bool)
    assert speech_fraction(flags, np.array([0, 2]), 4).tolist() == [0.5, 0.25]


def test_detector_block_round_trips_through_the_metadata():
    d = {"features": {}, "gate": {"abs_db": -60, "detector": {
        "model": "speech.tflite", "threshold": 0.4, "min_fraction": 0.1,
        "features": {"n_fft": 1024, "pitch": False}, "figures": {"rejected": 0.99, "by_kind": {"tone": 1.0}}}}}
    meta = ModelMeta.from_dict(d)
    det = meta.gate.detector
    assert isinstance(det, SpeechConfig) and det.threshold == 0.4 and dict(det.features)["pitch"] is False
    hash(meta.gate)  # frozen all the way down (configs are cache keys elsewhere)
    out = gate_dict(meta.gate)
    assert out["abs_db"] == -60 and out["detector"]["figures"] == {"rejected": 0.99, "by_kind": {"tone": 1.0}}
    assert ModelMeta.from_dict({**d, "gate": out}).gate == meta.gate
    assert "detector" not in gate_dict(GateConfig())


def test_a_detector_that_is_not_an_object_is_bad_metadata():
    import pytest

    from streamer.errors import ModelError

    with pytest.raises(ModelError):
        ModelMeta.from_dict({"gate": {"detector": "speech.tflite"}})


def test_a_detector_for_other_frames_is_refused_at_load():
    import pytest

    from streamer.errors import ModelError

    d = {"features": {"n_fft": 512}, "gate": {"detector": {"features": {"n_fft": 1024}}}}
    with pytest.raises(ModelError, match="retrain"):
        ModelMeta.from_dict(d)
    with pytest.raises(ModelError, match="unknown speech detector"):
        ModelMeta.from_dict({"gate": {"detector": {"kind": "oracle"}}})


def test_a_head_on_frames_is_refused_for_other_frame_rates():
    """A ``frames-v1`` head learned frames at a rate: sub-window means are refused, other window lengths run."""
    import pytest

    from streamer.errors import ModelError

    det = {"inputs": "frames-v1", "features": {"sub_window_frames": 1}}
    ModelMeta.from_dict({"features": {"window_s": 2.0}, "gate": {"detector": det}})
    with pytest.raises(ModelError, match="sub_window_frames"):
        ModelMeta.from_dict({"features": {"sub_window_frames": 5}, "gate": {"detector": det}})
