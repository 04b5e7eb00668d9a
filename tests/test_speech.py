"""The speech detector: non-speech sounds get no label, speech keeps its label (also at 8 kHz and in noise).

The sounds are synthesised here (never the training set's generators, so a test does not simply
replay what the head was trained on); the speech is the fixture clips.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from conftest import FIXTURES, ROOT, emostream, read_mono

SR = 16000


def _t(seconds: float) -> np.ndarray:
    return np.arange(int(seconds * SR)) / SR


def _tone(rng):
    return np.sin(2 * np.pi * 523.0 * _t(8))


def _chirp(rng):
    f = 200 + 3000 * (_t(8) % 2.0) / 2.0
    return np.sin(2 * np.pi * np.cumsum(f) / SR)


def _dtmf(rng):
    y = np.zeros(int(8 * SR))
    for i, (lo, hi) in enumerate([(697, 1209), (770, 1336), (852, 1477), (941, 1336)] * 8):
        a = int(i * 0.25 * SR)
        t = _t(0.12)
        y[a : a + len(t)] = np.sin(2 * np.pi * lo * t) + np.sin(2 * np.pi * hi * t)
    return y


def _beeps(rng):
    return np.sin(2 * np.pi * 1000 * _t(8)) * ((_t(8) % 1.0) < 0.3)


def _white(rng):
    return rng.standard_normal(int(8 * SR))


def _pink(rng):
    spec = np.fft.rfft(rng.standard_normal(int(8 * SR)))
    spec /= np.sqrt(np.maximum(np.arange(len(spec)), 1))
    return np.fft.irfft(spec, int(8 * SR))


def _brown(rng):
    y = np.cumsum(rng.standard_normal(int(8 * SR)))
    return y - np.convolve(y, np.ones(400) / 400, mode="same")


def _hum(rng):
    return sum(np.sin(2 * np.pi * 50 * k * _t(8)) / k for k in (1, 2, 3, 5))


def _clicks(rng):
    y = np.zeros(int(8 * SR))
    y[:: int(0.1 * SR)] = 1.0
    return y


def _notes(rng):
    out = []
    for midi in [60, 62, 64, 65, 67, 69, 71, 72, 71, 69, 67, 65, 64, 62, 60, 64]:
        t = _t(0.5)
        f = 440 * 2 ** ((midi - 69) / 12)
        out.append(sum(np.sin(2 * np.pi * f * k * t) / k**1.5 for k in range(1, 6)) * np.exp(-t / 0.4))
    return np.concatenate(out)


def _drums(rng):
    """A pitched kick every 0.5 s with a noise burst (hi-hat) between: 2.0.0's summary head called it speech."""
    y = np.zeros(int(8 * SR))
    t = _t(0.25)
    kick = np.sin(2 * np.pi * (50 + 80 * np.exp(-t / 0.03)) * t) * np.exp(-t / 0.12)
    hat = rng.standard_normal(len(t)) * np.exp(-t / 0.02) * 0.3
    for i in range(32):
        a = int(i * 0.25 * SR)
        y[a : a + len(t)] += kick if i % 2 == 0 else hat
    return y


def _chords(rng):
    """Hold music: a struck triad every beat over a decaying bass note, a chord a bar."""
    out = []
    for root in (48, 53, 55, 48, 45, 50, 55, 48):
        bar = np.zeros(int(1.0 * SR))
        t = _t(0.5)
        for beat in (0, 1):
            for step in (12, 16, 19):
                f = 440 * 2 ** ((root + step - 69) / 12)
                note = sum(np.sin(2 * np.pi * f * k * t) / k**1.2 for k in range(1, 7)) * np.exp(-t / 0.6)
                bar[beat * len(t) : (beat + 1) * len(t)] += note
        f = 440 * 2 ** ((root - 12 - 69) / 12)
        bar += 0.8 * np.sin(2 * np.pi * f * _t(1.0)) * np.exp(-_t(1.0) / 0.8)
        out.append(bar)
    return np.concatenate(out)


SOUNDS = {f.__name__[1:]: f for f in (_tone, _chirp, _dtmf, _beeps, _white, _pink, _brown, _hum, _clicks,
                                       _notes, _drums, _chords)}


def _level(y: np.ndarray, db: float) -> np.ndarray:
    return (y * (10 ** (db / 20) / (np.sqrt(np.mean(y**2)) + 1e-12))).astype(np.float32)


def _wire(events) -> list[dict]:
    return [e.to_wire() if hasattr(e, "to_wire") else e for e in events]


def _windows(model, y: np.ndarray, sr: int, blocks: int | None = None) -> list[dict]:
    from streamer.pipeline import Pipeline

    meta, clf = model
    pipe = Pipeline(meta, clf, in_rate=sr, in_channels=1)
    step = blocks or len(y)
    out = []
    for a in range(0, len(y), step):
        out += _wire(pipe.feed(y[a : a + step, None]))
    out += _wire(pipe.finish())
    return [e for e in out if e["type"] == "window"]


def _telephone(y: np.ndarray) -> np.ndarray:
    """16 kHz -> 8 kHz mu-law bytes -> decoded 8 kHz samples (as a phone line delivers them)."""
    import soxr

    from streamer.codecs import decode_pcm, encode_pcm

    lo = soxr.resample(y, SR, 8000)
    return decode_pcm(encode_pcm(np.clip(lo, -1, 1)[:, None], "mulaw"), "mulaw", 1)[:, 0]


def test_shipped_model_names_a_speech_detector(model):
    meta, _ = model
    det = meta.gate.detector
    assert det is not None and (ROOT / "model" / det.model).exists()
    figs = dict(det.figures)
    # the figures it shipped with (measure split). The headline is on the generator family it never
    # heard (tools/nonspeech_other.py), beside each family's own; the target is 0.97
    trained = figs["trained_on_families"]
    unseen = [figs[f"rejected_family_{f}"] for f in ("a", "b", "c") if f not in trained]
    if unseen:  # the headline pools the unseen families (a head trained on all has none to headline)
        assert min(unseen) <= figs["rejected"] <= max(unseen)
    # 2.0.0's summary head: 0.837; 2.1.0's head on frames: 0.940; 2.2.0 (more music in training): 0.973
    # (the target is 0.97)
    assert figs["rejected"] >= 0.96 and figs["kept"] >= 0.95
    assert dict(det.features)["sub_window_frames"] == meta.features.sub_window_frames and det.inputs == "frames-v1"
    assert 0 < figs["cost_share"] < 0.2 and 0 < figs["cost_share_live"] < 0.1
    assert all(figs[f"rejected_family_{f}"] >= 0.95 for f in trained)
    assert set(dict(figs["rejected_by_kind"])) >= {"tone", "chirp", "dtmf", "white", "hum", "clicks", "notes", "drums"}


@pytest.mark.parametrize("kind", sorted(SOUNDS))
@pytest.mark.parametrize("rate", [16000, 8000])
def test_non_speech_gets_no_label(model, kind, rate):
    rng = np.random.default_rng(7)
    y = _level(SOUNDS[kind](rng), -20)
    if rate == 8000:
        y = _telephone(y)
    wins = _windows(model, y, rate)
    assert wins, "no windows"
    called = [(w["start"], w["label"]) for w in wins if w["speech"]]
    assert not called, f"{kind} at {rate} Hz called speech: {called}"
    assert all(w["label"] is None and w["confidence"] is None for w in wins)


def _fixture_variants() -> list[tuple[str, str]]:
    return [(p.name, v) for p in sorted(FIXTURES.glob("*.flac")) for v in ("clean", "8k-mulaw", "noise-10dB")]


@pytest.mark.parametrize("name,variant", _fixture_variants())
def test_fixture_speech_keeps_its_speech(model, name, variant):
    y, sr = read_mono(FIXTURES / name)
    assert sr == SR
    if variant == "noise-10dB":
        rng = np.random.default_rng(3)
        n = rng.standard_normal(len(y)).astype(np.float32)
        loud = np.abs(y) > 0.1 * np.abs(y).max()
        p = np.mean(y[loud] ** 2)  # the utterance's power, not the silences'
        y = y + n * np.sqrt(p / 10 ** (10 / 10))
    elif variant == "8k-mulaw":
        y, sr = _telephone(y), 8000
    wins = _windows(model, y, sr)
    assert any(w["speech"] and w["label"] for w in wins), wins


def test_speech_with_tone_between_streams_in_blocks_as_whole(model):
    """The detector keeps the streaming property: small blocks give the windows of the whole."""
    rng = np.random.default_rng(1)
    clips = [read_mono(p)[0] for p in sorted(FIXTURES.glob("*.flac"))]
    parts = []
    for c in clips:
        parts += [c, _level(_tone(rng)[: 3 * SR], -25), _level(_white(rng)[: 2 * SR], -40)]
    y = np.concatenate(parts).astype(np.float32)
    whole = _windows(model, y, SR)
    small = _windows(model, y, SR, blocks=777)
    assert [(w["start"], w["speech"], w["label"]) for w in whole] == [(w["start"], w["speech"], w["label"]) for w in small]
    assert any(w["speech"] for w in whole) and not all(w["speech"] for w in whole)


def test_label_cli_rejects_a_medley_of_sounds(tmp_path):
    """``emostream label`` on a file of tones, noise, hum, clicks, DTMF and notes: no window is speech."""
    rng = np.random.default_rng(11)
    y = np.concatenate([_level(SOUNDS[k](rng), -22) for k in ("tone", "white", "hum", "clicks", "dtmf", "notes")])
    path = tmp_path / "medley.wav"
    sf.write(path, y, SR)
    r = emostream("label", str(path), "-f", "json")
    assert r.returncode == 0, r.stderr.decode()
    doc = json.loads(r.stdout)
    assert len(doc["windows"]) >= 40
    assert not [w for w in doc["windows"] if w["speech"] or w["label"] is not None]
    assert doc["segments"] == []


def test_label_cli_keeps_fixture_speech_at_8k(tmp_path, clips):
    y, _ = read_mono(clips["angry"])
    path = tmp_path / "call.wav"
    sf.write(path, _telephone(y), 8000)
    r = emostream("label", str(path), "-f", "json")
    assert r.returncode == 0, r.stderr.decode()
    doc = json.loads(r.stdout)
    assert any(w["speech"] and w["label"] for w in doc["windows"])


def _model_copy(tmp_path, change) -> str:
    for f in ("emotion.tflite", "emotion.json", "speech.tflite"):
        shutil.copy(ROOT / "model" / f, tmp_path / f)
    d = json.loads((tmp_path / "emotion.json").read_text())
    change(d)
    (tmp_path / "emotion.json").write_text(json.dumps(d))
    return str(tmp_path / "emotion.tflite")


def test_a_detector_for_other_features_is_refused(tmp_path, clips):
    path = _model_copy(tmp_path, lambda d: d["gate"]["detector"]["features"].update(n_fft=512))
    r = emostream("label", str(clips["sad"]), "--model", path)
    err = r.stderr.decode().strip()
    assert r.returncode != 0 and err.startswith("emostream: error:") and "retrain" in err
    assert len(err.splitlines()) == 1


def test_a_missing_detector_file_is_a_one_line_error(tmp_path, clips):
    path = _model_copy(tmp_path, lambda d: d["gate"]["detector"].update(model="nowhere.tflite"))
    r = emostream("classify", str(clips["sad"]), "--model", path)
    err = r.stderr.decode().strip()
    assert r.returncode != 0 and "speech detector not found" in err and len(err.splitlines()) == 1


def test_model_without_detector_keeps_the_energy_gate():
    """A model whose metadata names no detector (the seed model) runs the energy gate alone."""
    from streamer.config import load_meta
    from streamer.speech import SpeechDetector

    meta = load_meta(ROOT / "model" / "seed.json")
    det = SpeechDetector(meta)
    assert det.head is None
    level = np.array([-80.0, -20.0, -30.0, -90.0])
    assert det(np.zeros((4, meta.features.n_channels), np.float32), level).tolist() == [False, True, True, False]


@pytest.mark.parametrize("inputs", ["frames-v1", "summary-v1"])
def test_detector_inputs_in_blocks_equal_inputs_at_once(model, inputs):
    """Whatever the block sizes, a stream's detector windows and their inputs are the same (both kinds)."""
    from streamer.features import frame_features
    from streamer.speech import DetectorInputs

    meta, _ = model
    f = meta.features
    y = np.concatenate([read_mono(p)[0] for p in sorted(FIXTURES.glob("*.flac"))[:2]])
    feats, level = frame_features(y, f)
    gate = (level > -60)
    whole = DetectorInputs(inputs, f)
    s1, x1 = whole.push(feats, level, gate)
    t1 = whole.flush()
    parts = DetectorInputs(inputs, f)
    got = [parts.push(feats[a : a + 7], level[a : a + 7], gate[a : a + 7]) for a in range(0, len(feats), 7)]
    t2 = parts.flush()
    assert len(s1) >= 2 and x1.shape == (len(s1),) + whole.shape()
    np.testing.assert_array_equal(np.concatenate([g[0] for g in got]), s1)
    np.testing.assert_allclose(np.concatenate([g[1] for g in got]), x1, rtol=1e-6)
    assert t1[2] == t2[2] and len(t1[0]) == 1
    np.testing.assert_allclose(t2[1], t1[1], rtol=1e-6)


def test_frames_of_a_short_stream_are_padded_with_silence(model):
    """A stream shorter than a window gets one window; the frames it lacks are zero (gate closed)."""
    from streamer.features import frame_features
    from streamer.speech import FRAME_COLUMNS, DetectorInputs

    meta, _ = model
    f = meta.features
    y, _ = read_mono(sorted(FIXTURES.glob("*.flac"))[0])
    y = y[: int(1.5 * SR)]
    feats, level = frame_features(y, f)
    di = DetectorInputs("frames-v1", f)
    starts, _ = di.push(feats, level, level > -60)
    assert len(starts) == 0
    s, x, n = di.flush()
    assert list(s) == [0] and n == len(feats) and x.shape == (1, f.window_steps, len(FRAME_COLUMNS))
    assert not x[0, n:].any() and x[0, :n, FRAME_COLUMNS.index("gated")].any()


def test_classify_keeps_stderr_empty():
    """The detector's interpreter must not print the runtime's XNNPACK INFO line (one-line stderr)."""
    proc = emostream("classify", str(sorted(FIXTURES.glob("*.flac"))[0]))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""


def test_head_is_safe_across_threads(model):
    """One head serves every channel and ingest thread: concurrent calls of any batch size agree."""
    import threading

    from streamer.speech import _head

    meta, _ = model
    det = meta.gate.detector
    path = ROOT / "model" / det.model
    shape = _head_shape(path)
    head = _head(path, shape)
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(n, *shape)).astype(np.float32) for n in (1, 3, 7, 2, 5, 4, 6, 8)]
    expected = [head(b) for b in batches]
    errors: list[BaseException] = []
    results: dict[int, list[np.ndarray]] = {i: [] for i in range(len(batches))}

    def work(i: int) -> None:
        try:
            for _ in range(60):
                results[i].append(head(batches[i]))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[0]
    for i, got in results.items():
        assert len(got) == 60
        for g in got:
            np.testing.assert_allclose(g, expected[i], rtol=1e-5, atol=1e-6)


def _head_shape(path) -> tuple[int, ...]:
    from streamer.classifier import load_interpreter_class

    Interpreter, _ = load_interpreter_class()
    return tuple(int(v) for v in Interpreter(model_path=str(path)).get_input_details()[0]["shape"][1:])


@pytest.mark.parametrize("window", ["2", "5"])
def test_other_window_lengths_keep_the_detector(tmp_path, window):
    """``label --window``: a head on 3 s of frames judges 2 s windows padded, 5 s windows in pieces."""
    rng = np.random.default_rng(2)
    speech = np.concatenate([read_mono(p)[0] for p in sorted(FIXTURES.glob("*.flac"))])
    tone = _level(_tone(rng), -20)
    path = tmp_path / "mixed.wav"
    sf.write(path, np.concatenate([tone, speech, tone]).astype(np.float32), SR)
    r = emostream("label", str(path), "-f", "json", "--window", window, "--hop", "1")
    assert r.returncode == 0, r.stderr.decode()
    wins = json.loads(r.stdout)["windows"]
    assert wins and abs(wins[0]["end"] - wins[0]["start"] - float(window)) < 1e-6
    t_speech = (len(tone) / SR, (len(tone) + len(speech)) / SR)
    inside = [w for w in wins if w["start"] >= t_speech[0] and w["end"] <= t_speech[1]]
    tone_only = [w for w in wins if w["end"] <= t_speech[0] or w["start"] >= t_speech[1]]
    assert inside and tone_only
    assert sum(w["speech"] for w in inside) >= 0.8 * len(inside)
    assert not any(w["speech"] for w in tone_only)
