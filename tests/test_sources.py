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
