"""Labelling a recording: the model, the analysis into sinks, the one label per recording, POST /label's labeler."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from streamer.errors import InputError, ModelError
from streamer.events import Alert, Segment, Window
from streamer.labelling import Analysis, Model, analyse, load_model, make_labeler, overall
from streamer.sources import ArraySource
from tests.conftest import EXAMPLE, emostream


def test_load_model_is_a_model_that_unpacks_as_meta_and_classifier(model):
    meta, clf = model
    assert isinstance(model, Model) and model.meta is meta and model.classifier is clf
    assert model.labels == list(meta.labels) and model.sample_rate == meta.features.sample_rate
    m = load_model(window=2.0, hop=0.5)
    assert m.meta.features.window_s == pytest.approx(2.0) and m.meta.features.hop_s == pytest.approx(0.5)


def test_a_missing_model_is_a_model_error(tmp_path):
    with pytest.raises(ModelError):
        load_model(tmp_path / "nope.tflite")


def test_analyse_calls_the_header_first_then_every_event_in_order(model):
    meta, clf = model
    calls: list = []
    res = analyse(str(EXAMPLE), meta, clf, on_header=lambda h: calls.append(("header", h)),
                  on_event=lambda e: calls.append(("event", e)))
    assert isinstance(res, Analysis) and calls[0][0] == "header"
    header = calls[0][1]
    assert header["source"] == str(EXAMPLE) and header["channels"] == ["mix"] and header["sample_rate"] == 16000
    assert header["model"] == {"name": meta.name, "version": meta.version, "labels": list(meta.labels)}
    events = [e for kind, e in calls[1:]]
    assert all(kind == "event" for kind, _ in calls[1:]) and events
    assert all(isinstance(e, (Window, Segment, Alert)) for e in events)
    windows = [e for e in events if isinstance(e, Window)]
    assert [w.start for w in windows] == sorted(w.start for w in windows)
    # the raw model output of every speech window is kept for the recording's one label
    assert len(res.raw) == sum(w.speech for w in windows)
    assert res.duration == pytest.approx(62.4, abs=0.5) and res.stats.audio_s > 60


def test_overall_is_the_mean_of_the_speech_windows_raw_probabilities(model):
    meta, clf = model
    events: list = []
    res = analyse(str(EXAMPLE), meta, clf, on_event=events.append)
    label, conf, probs = overall(res, meta.labels)
    mean = np.mean([w.raw for w in events if isinstance(w, Window) and w.speech], axis=0)
    assert label == meta.labels[int(np.argmax(mean))] and conf == pytest.approx(float(mean.max()), abs=1e-6)
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-3)
    silent = analyse(ArraySource(np.zeros(16000 * 4, np.float32), 16000), meta, clf)
    assert overall(silent, meta.labels) == (None, 0.0, {})  # no speech: no label (classify says "none")


def test_nothing_decodable_is_an_input_error(tmp_path, model):
    p = tmp_path / "empty.wav"
    sf.write(p, np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(InputError):
        analyse(str(p), *model)


def test_the_upload_labeler_answers_what_label_json_writes(model, tmp_path):
    proc = emostream("label", str(EXAMPLE), "-f", "json")
    assert proc.returncode == 0, proc.stderr.decode()
    want = json.loads(proc.stdout)
    got = make_labeler(*model)(str(EXAMPLE), "upload.flac")
    assert got["source"] == "upload.flac" and {**got, "source": want["source"]} == want
    # names that do not fit the upload's channels fall back to the defaults instead of failing it
    got = make_labeler(*model, channels="split", channel_names=["agent", "customer"])(str(EXAMPLE), "mono.flac")
    assert got["channels"] == ["ch1"]
