"""Temperature scaling: the metadata's temperature reaches every probability the classifier gives."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from streamer.classifier import Classifier, calibrated
from streamer.config import ModelMeta
from streamer.errors import ModelError


def test_temperature_softens_without_changing_the_label():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(8) * 0.3, size=50).astype(np.float32)
    assert calibrated(p, 1.0) is p
    q = calibrated(p, 2.0)
    assert np.allclose(q.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(q.argmax(1), p.argmax(1))
    assert np.all(q.max(1) <= p.max(1) + 1e-6) and np.mean(q.max(1)) < np.mean(p.max(1)) - 0.05
    # softmax of log-probabilities / T, by hand for one row
    r = np.exp(np.log(p[0].astype(np.float64)) / 2.0)
    assert np.allclose(q[0], r / r.sum(), atol=1e-6)


def test_metadata_keeps_its_temperature_and_refuses_absurd_ones(model):
    meta, _ = model
    d = meta.to_dict()
    d["temperature"] = 1.5
    back = ModelMeta.from_dict(d, meta.model_path)
    assert back.temperature == 1.5 and back.to_dict()["temperature"] == 1.5
    d["temperature"] = 0.0
    with pytest.raises(ModelError, match="temperature"):
        ModelMeta.from_dict(d, meta.model_path)


def test_the_classifier_applies_the_model_temperature(model):
    meta, clf = model
    x = np.random.default_rng(1).standard_normal((4, meta.features.window_steps, meta.features.n_channels))
    hot = Classifier(meta=replace(meta, temperature=1.0))(x.astype(np.float32))
    cool = Classifier(meta=replace(meta, temperature=2.0))(x.astype(np.float32))
    assert np.allclose(cool, calibrated(hot, 2.0), atol=1e-5)
    assert np.array_equal(cool.argmax(1), hot.argmax(1))
