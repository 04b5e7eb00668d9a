"""The training augmentations keep a clip's length and change its signal (no corpus needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import augment  # noqa: E402

SR = 16000


def _voice(seconds: float = 1.7) -> np.ndarray:
    """A harmonic 'voice' gliding in pitch (100 -> 250 Hz, so it has no period), with a slow amplitude
    envelope and a little noise, float32 in [-1, 1]."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * (100 * t + 150 / (2 * seconds) * t**2)
    y = sum(0.5**k * np.sin((k + 1) * phase) for k in range(10))
    y *= 0.2 * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t) ** 2)
    return (y + 0.002 * rng.standard_normal(len(t))).astype(np.float32)


def _ffmpeg_or_skip():
    try:
        from streamer.sources import ffmpeg_exe

        ffmpeg_exe()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no ffmpeg: {exc}")


@pytest.mark.parametrize("name,kbps", [(c, b) for c, (_e, _f, bs) in augment.CODECS.items() for b in bs])
def test_codec_keeps_length_and_changes_signal(name, kbps):
    _ffmpeg_or_skip()
    y = _voice()
    z = augment.codec(y, SR, name, kbps)
    assert z.dtype == np.float32 and z.shape == y.shape
    err = float(np.mean((z - y) ** 2)) / float(np.mean(y**2))
    assert err > 1e-4  # lossy: not the same samples
    # ... but still the same clip, in time (no encoder delay left): correlation at lag 0 is high
    # and no shifted lag correlates better
    c = [float(np.dot(y[2000:-2000], z[2000 + k : len(z) - 2000 + k])) for k in range(-400, 401, 1)]
    assert int(np.argmax(c)) - 400 == 0
    assert np.corrcoef(y, z)[0, 1] > 0.8


def test_codec_version_is_seeded_and_keeps_length():
    _ffmpeg_or_skip()
    assert "codec" in augment.VERSIONS
    y = _voice(1.234)  # a length that is no multiple of any codec frame
    a = augment.make_version(y, "codec", SR, np.random.default_rng([0, 1, 7]))
    b = augment.make_version(y, "codec", SR, np.random.default_rng([0, 1, 7]))
    assert a.shape == y.shape and np.array_equal(a, b)
    assert not np.allclose(a, y, atol=1e-3)


def test_every_version_keeps_length_except_speed():
    y = _voice()
    for name in augment.VERSIONS:
        if name == "codec":
            continue  # ffmpeg: tested above
        z = augment.make_version(y, name, SR, np.random.default_rng(3))
        assert z.dtype == np.float32
        if name in ("speed", "tel_speed"):  # tape speed changes the duration by the factor
            assert 0.85 * len(y) < len(z) < 1.15 * len(y)
        else:
            assert len(z) == len(y)


def test_numbered_version_is_another_draw_of_the_same_recipe():
    from tools.featcache import version_rng

    y = _voice()
    a = augment.make_version(y, "noisy", SR, version_rng(0, 5, "noisy"))
    b = augment.make_version(y, "noisy#2", SR, version_rng(0, 5, "noisy#2"))
    again = augment.make_version(y, "noisy#2", SR, version_rng(0, 5, "noisy#2"))
    assert np.array_equal(b, again)  # seeded by (seed, clip, full name)
    assert not np.allclose(a, b)  # a different draw
    # same recipe: similar SNR range (white noise of 10-30 dB)
    for z in (a, b):
        snr = 10 * np.log10(np.mean(y**2) / np.mean((z - y * (np.dot(z, y) / np.dot(y, y))) ** 2))
        assert 5 < snr < 35
    with pytest.raises(ValueError):
        augment.make_version(y, "nonsense#2", SR, version_rng(0, 5, "x"))
