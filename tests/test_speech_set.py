"""The speech detector's labelled set: two independent generator families of every non-speech kind.

The measure split must not replay the training split's generators (a head can learn a generator
rather than a kind of sound), so each kind exists twice, made in different ways.
"""

from __future__ import annotations

import numpy as np
import pytest

from tools import speech_set
from tools.nonspeech_other import NONSPEECH_OTHER

N = 3 * speech_set.SR


def test_both_families_have_every_kind():
    assert list(NONSPEECH_OTHER) == list(speech_set.NONSPEECH)
    assert speech_set.generators("a") is speech_set.NONSPEECH
    assert speech_set.generators("b") is NONSPEECH_OTHER
    assert speech_set.DEFAULT_FAMILY == {"choose": "a", "measure": "b"}
    with pytest.raises(ValueError, match="family"):
        speech_set.generators("c")


@pytest.mark.parametrize("kind", list(NONSPEECH_OTHER))
def test_other_family_makes_a_sound_of_its_own(kind):
    a = NONSPEECH_OTHER[kind](np.random.default_rng(3), N)
    again = NONSPEECH_OTHER[kind](np.random.default_rng(3), N)
    assert a.shape == (N,) and np.isfinite(a).all()
    assert np.sqrt(np.mean(a**2)) > 1e-3, "silent"
    np.testing.assert_array_equal(a, again)  # a seed gives the same stream
    # another rendition, not the training generator's output for the same draw
    b = speech_set.NONSPEECH[kind](np.random.default_rng(3), N)
    assert not np.allclose(a / (np.std(a) + 1e-12), b / (np.std(b) + 1e-12), atol=1e-2)


@pytest.mark.parametrize("n", [1, 97, 1601])
def test_every_kind_of_both_families_fills_any_length(n):
    for table in (speech_set.NONSPEECH, NONSPEECH_OTHER):
        for kind, gen in table.items():
            for seed in range(4):  # medleys cut other kinds to odd lengths
                y = gen(np.random.default_rng(seed), n)
                assert y.shape == (n,) and np.isfinite(y).all(), kind


def test_other_family_spectra_are_what_they_claim():
    rng = np.random.default_rng(0)
    freqs = np.fft.rfftfreq(N, 1 / speech_set.SR)

    def slope(y):
        p = np.abs(np.fft.rfft(y)) ** 2
        band = (freqs > 50) & (freqs < 5000)
        return np.polyfit(np.log(freqs[band]), np.log(p[band] + 1e-20), 1)[0]

    # pink falls ~1/f, brown ~1/f^2, white is flat: made by IIR filters here, not FFT shaping
    assert abs(slope(NONSPEECH_OTHER["white"](rng, N))) < 0.2
    assert -1.3 < slope(NONSPEECH_OTHER["pink"](rng, N)) < -0.7
    assert slope(NONSPEECH_OTHER["brown"](rng, N)) < -1.5


def test_nonspeech_stream_records_its_family():
    rng = np.random.default_rng(1)
    s = speech_set.nonspeech_stream("drums", rng, 2.0, False, "x", NONSPEECH_OTHER)
    assert s.family == "b" and s.kind == "drums" and s.rate == 16000 and s.spans == []
    s = speech_set.nonspeech_stream("drums", rng, 2.0, True, "y")
    assert s.family == "a" and s.condition == "8k-mulaw" and s.rate == 8000
    assert np.max(np.abs(s.audio)) <= 1.0
