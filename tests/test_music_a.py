"""Family a's music (tools/music_a.py): the styles tools.speech_set's chords and drums draw from."""

from __future__ import annotations

import numpy as np
import pytest

from tools import music_a, speech_set

SR = speech_set.SR
N = 4 * SR


@pytest.mark.parametrize("gen", [music_a.band, music_a.loop, music_a.kit])
def test_generators_are_deterministic_finite_and_sound(gen):
    for seed in range(6):
        a = gen(np.random.default_rng(seed), N)
        assert a.shape == (N,) and np.isfinite(a).all() and np.std(a) > 0
        assert np.array_equal(a, gen(np.random.default_rng(seed), N))
    assert not np.array_equal(gen(np.random.default_rng(0), N), gen(np.random.default_rng(1), N))


def test_every_instrument_kind_plays_in_tune():
    """A note's strongest partial lies at its frequency or a harmonic of it (bells aside: inharmonic)."""
    seen = set()
    for seed in range(60):
        rng = np.random.default_rng(seed)
        tb = music_a._timbre(rng)
        seen.add(tb["kind"])
        if tb["kind"] == "bell":
            continue
        y = music_a._note(220.0, SR, tb, rng)
        spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
        peak = np.argmax(spec) * SR / len(y)
        ratio = peak / 220.0
        assert abs(ratio - round(ratio)) < 0.06 * max(1, round(ratio)), (tb["kind"], peak)
    assert seen == {"struck", "plucked", "bowed", "blown", "organ", "synth", "bell", "sine"}


def test_a_room_leaves_a_tail():
    click = np.zeros(SR)
    click[100:110] = 1.0
    wet = music_a.room(click, np.random.default_rng(0))
    assert np.sqrt(np.mean(wet[int(0.1 * SR) : int(0.2 * SR)] ** 2)) > 1e-3
    assert np.all(click[int(0.1 * SR) :] == 0)


def test_kit_plays_on_its_grid():
    """A kit's onsets fall on the 16th-note grid of its tempo: the envelope's autocorrelation is
    higher at one step than at half a step."""
    rng = np.random.default_rng(5)
    y = music_a.kit(rng, 8 * SR, tempo=120.0)
    env = np.abs(y).reshape(-1, SR // 1000).max(axis=1)  # 1 ms envelope
    env = env - env.mean()
    ac = np.correlate(env, env, "full")[len(env) - 1 :]
    step_ms = 125  # a 16th at 120 bpm
    assert ac[step_ms - 10 : step_ms + 11].max() > ac[step_ms // 2 - 10 : step_ms // 2 + 11].max()


def test_family_a_chords_and_drums_draw_every_style():
    """One stream in three keeps the first recipe; the rest are music_a's bands and loops."""
    old, new = 0, 0
    for seed in range(30):
        y = speech_set.chords(np.random.default_rng(seed), SR)
        rng = np.random.default_rng(seed)
        if rng.random() >= 1 / 3:
            new += np.array_equal(y, music_a.band(rng, SR))
        else:
            old += 1
    assert old >= 5 and new >= 12 and old + new == 30
    assert any(np.array_equal(speech_set.drums(np.random.default_rng(s), SR), music_a.loop(_after_draw(s), SR))
               for s in range(10))


def _after_draw(seed: int) -> np.random.Generator:
    rng = np.random.default_rng(seed)
    rng.random()
    return rng
