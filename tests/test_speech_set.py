"""The speech detector's labelled set: two independent generator families of every non-speech kind.

The measure split must not replay the training split's generators (a head can learn a generator
rather than a kind of sound), so each kind exists twice, made in different ways.
"""

from __future__ import annotations

import numpy as np
import pytest

from tools import speech_set
from tools.nonspeech_other import NONSPEECH_OTHER
from tools.nonspeech_third import NONSPEECH_THIRD

N = 6 * speech_set.SR  # longer than any cadence's silence (ring-back: up to 4 s off)


def test_every_family_has_every_kind():
    assert list(NONSPEECH_OTHER) == list(speech_set.NONSPEECH) == list(NONSPEECH_THIRD)
    assert speech_set.generators("a") is speech_set.NONSPEECH
    assert speech_set.generators("b") is NONSPEECH_OTHER
    assert speech_set.generators("c") is NONSPEECH_THIRD
    assert [speech_set.family_of(speech_set.generators(f)) for f in "abc"] == ["a", "b", "c"]
    assert speech_set.DEFAULT_FAMILY == {"choose": "a", "measure": "b"}
    with pytest.raises(ValueError, match="family"):
        speech_set.generators("d")
    assert speech_set.check_families("ca") == "ca"
    for bad in ("", "aa", "ad"):
        with pytest.raises(ValueError, match="families"):
            speech_set.check_families(bad)


@pytest.mark.parametrize("kind", list(NONSPEECH_OTHER))
@pytest.mark.parametrize("family", ["b", "c"])
def test_other_families_make_sounds_of_their_own(kind, family):
    gen = speech_set.generators(family)[kind]
    a = gen(np.random.default_rng(3), N)
    again = gen(np.random.default_rng(3), N)
    assert a.shape == (N,) and np.isfinite(a).all()
    assert np.sqrt(np.mean(a**2)) > 1e-3, "silent"
    np.testing.assert_array_equal(a, again)  # a seed gives the same stream
    # another rendition, not another family's output for the same draw
    for other in {"a", "b", "c"} - {family}:
        b = speech_set.generators(other)[kind](np.random.default_rng(3), N)
        assert not np.allclose(a / (np.std(a) + 1e-12), b / (np.std(b) + 1e-12), atol=1e-2)


@pytest.mark.parametrize("n", [1, 97, 1601])
def test_every_kind_of_both_families_fills_any_length(n):
    for table in (speech_set.NONSPEECH, NONSPEECH_OTHER, NONSPEECH_THIRD):
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

    # pink falls ~1/f, brown ~1/f^2, white is flat: made by filters, not FFT shaping (family b)
    assert abs(slope(NONSPEECH_OTHER["white"](rng, N))) < 0.2
    assert -1.3 < slope(NONSPEECH_OTHER["pink"](rng, N)) < -0.7
    assert slope(NONSPEECH_OTHER["brown"](rng, N)) < -1.5
    # Voss-McCartney pink noise (family c) falls about as 1/f over the speech band too
    assert -1.4 < slope(NONSPEECH_THIRD["pink"](rng, N)) < -0.6


def test_nonspeech_stream_records_its_family():
    rng = np.random.default_rng(1)
    s = speech_set.nonspeech_stream("drums", rng, 2.0, False, "x", NONSPEECH_OTHER)
    assert s.family == "b" and s.kind == "drums" and s.rate == 16000 and s.spans == []
    s = speech_set.nonspeech_stream("drums", rng, 2.0, True, "y")
    assert s.family == "a" and s.condition == "8k-mulaw" and s.rate == 8000
    s = speech_set.nonspeech_stream("chords", rng, 2.0, False, "z", NONSPEECH_THIRD)
    assert s.family == "c"
    assert np.max(np.abs(s.audio)) <= 1.0


@pytest.mark.parametrize("family", ["a", "b", "c"])
def test_mixtures_are_two_kinds_of_one_family_at_once(family):
    """Training mixtures: deterministic, within the level range, labelled as a kind of their own."""
    table = speech_set.generators(family)
    a = speech_set.mixture_stream(table, np.random.default_rng(5), 4.0, False, "m")
    again = speech_set.mixture_stream(table, np.random.default_rng(5), 4.0, False, "m")
    assert a.kind == "mixture" and a.family == family and a.rate == speech_set.SR and a.spans == []
    np.testing.assert_array_equal(a.audio, again.audio)
    db = 20 * np.log10(np.sqrt(np.mean(a.audio.astype(np.float64) ** 2)))
    assert -41 < db < -11
    tel = speech_set.mixture_stream(table, np.random.default_rng(5), 4.0, True, "m")
    assert tel.rate == 8000 and tel.condition == "8k-mulaw" and len(tel.audio) == 4 * 8000


def test_mixtures_join_the_split_only_when_asked(tmp_path):
    from tools.speech_set import streams

    plain = [s.name for s in streams("choose", per_kind=1, families="a", root=tmp_path)]
    mixed = [s.name for s in streams("choose", per_kind=1, families="a", root=tmp_path, mixtures=2)]
    assert not any(n.startswith("mixture") for n in plain)
    assert [n for n in mixed if n.startswith("mixture")] == ["mixture-16k-a0", "mixture-16k-a1", "mixture-8k-a0",
                                                           "mixture-8k-a1"]
    assert [n for n in mixed if not n.startswith("mixture")] == plain
