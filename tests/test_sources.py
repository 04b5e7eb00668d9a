"""Real files in many formats, rates and channel counts, decoded in blocks."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from streamer.errors import InputError
from streamer.sources import FfmpegSource, SoundFileSource, load_audio, open_source
from tests.conftest import ffmpeg, read_mono


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW"])
def test_wav_subtypes(tmp_path, clips, subtype):
    y, sr = read_mono(clips["angry"])
    p = tmp_path / f"x_{subtype}.wav"
    sf.write(p, y, sr, subtype=subtype)
    got, gsr = load_audio(p)
    assert gsr == sr and len(got) == len(y)
    tol = {"PCM_U8": 0.02, "ULAW": 0.02, "ALAW": 0.02}.get(subtype, 1e-3)
    assert np.abs(got - y).max() < tol * 4


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 96000])
def test_any_rate_resamples_to_the_model_rate(tmp_path, clips, rate):
    import soxr

    y, sr = read_mono(clips["sad"])
    p = tmp_path / "r.flac"
    sf.write(p, soxr.resample(y, sr, rate), rate)
    got, gsr = load_audio(p, sample_rate=16000)
    assert gsr == 16000 and abs(len(got) - len(y)) <= 2
    if rate >= 16000:  # nothing of the signal above 8 kHz was lost
        assert np.corrcoef(got[: len(y)], y[: len(got)])[0, 1] > 0.99


def test_multichannel_blocks(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.1, (48000, 6)).astype(np.float32)
    p = tmp_path / "six.wav"
    sf.write(p, x, 48000, subtype="FLOAT")
    src = open_source(p)
    assert isinstance(src, SoundFileSource) and src.channels == 6 and src.duration == 1.0
    blocks = []
    while len(b := src.read(1000)):
        assert b.shape[1] == 6 and len(b) <= 1000
        blocks.append(b)
    np.testing.assert_allclose(np.concatenate(blocks), x)


def test_ogg_through_soundfile(tmp_path, clips):
    y, sr = read_mono(clips["happy"])
    p = tmp_path / "x.ogg"
    sf.write(p, y, sr, format="OGG", subtype="VORBIS")
    got, _ = load_audio(p)
    assert abs(len(got) - len(y)) < 100


@pytest.mark.parametrize("ext,codec", [("mp3", "libmp3lame"), ("m4a", "aac"), ("webm", "libopus")])
def test_compressed_audio_through_the_bundled_ffmpeg(tmp_path, clips, ext, codec):
    y, sr = read_mono(clips["angry"])
    wav = tmp_path / "in.wav"
    sf.write(wav, y, sr)
    p = tmp_path / f"x.{ext}"
    ffmpeg("-i", str(wav), "-c:a", codec, str(p))
    src = open_source(p)
    assert isinstance(src, FfmpegSource)
    got, gsr = load_audio(p, sample_rate=16000)
    assert abs(len(got) / gsr - len(y) / sr) < 0.1  # encoder padding only
    assert 0.3 < np.std(got) / np.std(y) < 3


def test_mp4_video_audio_track(tmp_path, clips):
    y, sr = read_mono(clips["sad"])
    wav = tmp_path / "in.wav"
    sf.write(wav, np.stack([y, -y], axis=1), sr)
    p = tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=blue:s=64x64:r=10", "-i", str(wav), "-shortest",
           "-c:v", "mpeg4", "-c:a", "aac", str(p))
    src = open_source(p)
    assert src.channels == 2 and src.sample_rate == sr
    got, _ = load_audio(p)
    assert abs(len(got) - len(y)) < sr * 0.2


def test_video_without_audio_is_a_clear_error(tmp_path):
    p = tmp_path / "silent.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=64x64:d=1:r=10", "-c:v", "mpeg4", str(p))
    with pytest.raises(InputError, match="no audio stream"):
        open_source(p)


# -- hostile and broken inputs (issue 16) ------------------------------------------------------

def _drain(src) -> np.ndarray:
    blocks = []
    while True:
        b = src.read(50_000)
        if len(b) == 0:
            break
        blocks.append(b)
    return np.concatenate(blocks) if blocks else np.zeros((0, src.channels), np.float32)


def test_broken_inputs_are_input_errors_naming_the_path(tmp_path):
    from tests.hostile import bad_inputs

    for name, path in bad_inputs(tmp_path).items():
        with pytest.raises(InputError) as info:
            with open_source(path) as src:
                _drain(src)
        msg = str(info.value)
        assert info.value.exit_code == 2 and str(path) in msg and "\n" not in msg, (name, msg)
        assert "b'" not in msg, msg  # no bytes reprs of the path from libsndfile


@pytest.mark.parametrize("rate,channels,needle", [(1, 1, "sample rate 1 Hz"), (2**31 - 1, 1, "sample rate 2147483647"),
                                                  (16000, 1000, "channel count 1000")])
def test_unsupported_rate_or_channels(tmp_path, rate, channels, needle):
    from tests.hostile import wav_bytes

    p = tmp_path / "odd.wav"
    p.write_bytes(wav_bytes(rate=rate, channels=channels, data=b"\0" * 2 * channels * 100))
    with pytest.raises(InputError, match=needle) as info:
        open_source(p)
    assert str(p) in str(info.value) and info.value.exit_code == 2


def test_non_utf8_file_name(tmp_path):
    import json

    from tests.hostile import non_utf8_path

    path = non_utf8_path(tmp_path)
    with open_source(path) as src:
        assert len(_drain(src)) == 4 * 16000
        json.dumps(src.uri).encode("utf-8")
        assert "\ufffd" in src.uri and src.uri.startswith(str(tmp_path))
    mp3 = path[:-4] + ".mp3"
    ffmpeg("-i", path, mp3)
    with open_source(mp3) as src:
        assert abs(len(_drain(src)) - 4 * 16000) < 3000
    with pytest.raises(InputError) as info:
        open_source(path[:-4] + "-missing.wav")
    str(info.value).encode("utf-8")


@pytest.mark.parametrize("bad,needle", [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"),
                                        (-np.inf, "NaN or infinite"), (1e30, "beyond full scale")])
def test_nonfinite_and_huge_float_samples(tmp_path, bad, needle):
    import warnings

    y = np.tile(np.float32([0.1, -0.1]), 16000)
    y[8000:9000] = bad
    p = tmp_path / "f.wav"
    sf.write(p, y, 16000, subtype="FLOAT")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning
        with open_source(p) as src:
            got = _drain(src)
            assert np.isfinite(got).all() and np.abs(got).max() <= 1.0
            assert len(src.warnings) == 1 and needle in src.warnings[0] and "0.5 s" in src.warnings[0]
    if not np.isfinite(bad):
        assert (got[8000:9000] == 0).all()  # read as silence
    np.testing.assert_array_equal(got[:8000, 0], y[:8000])


def test_nan_samples_label_as_silence_with_a_warning(tmp_path, model, clips):
    from streamer.labelling import analyse

    y, sr = read_mono(clips["angry"])
    y[:] = np.nan
    p = tmp_path / "nan.wav"
    sf.write(p, y, sr, subtype="FLOAT")
    res = analyse(str(p), *model)
    assert res.raw == []  # no speech windows
    assert any("NaN" in w for w in res.stats.warnings)


@pytest.mark.parametrize("xing", [True, False])
def test_truncated_mp3_warns(tmp_path, clips, xing):
    src_wav = tmp_path / "a.wav"
    y, sr = read_mono(clips["happy"])
    sf.write(src_wav, np.concatenate([y, y]), sr)
    mp3 = tmp_path / "a.mp3"
    ffmpeg("-i", str(src_wav), "-b:a", "64k", *([] if xing else ["-write_xing", "0"]), str(mp3))
    with open_source(mp3) as src:
        _drain(src)
        assert src.warnings == []
    data = mp3.read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[: len(data) // 2 + 37])
    with open_source(cut) as src:
        _drain(src)
        assert len(src.warnings) == 1 and ("cut off" in src.warnings[0] or "stopped" in src.warnings[0])
        assert str(cut) in src.warnings[0]


def test_stdin_is_spooled_and_removed(tmp_path, monkeypatch, clips):
    import io
    import os
    import sys

    from streamer.sources import spool_stdin

    data = clips["sad"].read_bytes()
    fake = io.TextIOWrapper(io.BytesIO(data))
    monkeypatch.setattr(sys, "stdin", fake)
    src = open_source("-")
    spool = src._spool
    assert src.uri == "-" and os.path.exists(spool)
    assert len(_drain(src)) > 16000
    src.close()
    assert not os.path.exists(spool)
    with pytest.raises(InputError, match="standard input is empty"):
        spool_stdin(io.BytesIO(b""))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"not audio at all" * 10)))
    with pytest.raises(InputError, match="^-: "):
        with open_source("-") as s2:
            _drain(s2)
    assert not [n for n in os.listdir(os.path.dirname(spool)) if n.startswith("emostream-stdin-")]
