"""A labelled speech / non-speech set for choosing and training the speech detector.

Non-speech is synthesised (every kind of sound a call centre's line carries besides a voice, each with
its parameters drawn at random per stream); speech comes from RAVDESS and EmoDB, grouped by speaker:
the ``choose`` split (training and thresholds) and the ``measure`` split (figures) share no speaker
and no random stream. Every stream exists at 16 kHz and as 8 kHz mu-law telephone audio; speech also
mixed with a noise or music bed at 0-20 dB SNR. The ``measure`` split's non-speech and beds come from
other generators (:mod:`tools.nonspeech_other`: the same kinds made another way), so its figures
say how the detector meets a sound it was not trained on, not a new draw of one it was. Family a's chords
and drums draw most streams from :mod:`tools.music_a` (many instruments, ways of playing, drum kits). Nothing here is stored: the same seed gives the
same streams, and ``tools/speech_eval.py`` turns them into window summaries (cached under cache/).

    python -m tools.speech_set --list            # the kinds, conditions and speakers of each split
    python -m tools.speech_set --write DIR --split measure --limit 3   # a few streams as WAV to listen to
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np


from tools.augment import mulaw_decode, mulaw_encode
from tools.datasets import Item, scan

SR = 16000
DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
#: speakers per split: no speaker is in both
SPEAKERS = {
    "choose": [f"ravdess-{i:02d}" for i in range(1, 15)] + [f"emodb-{s}" for s in ("03", "08", "09", "10", "11")],
    "measure": [f"ravdess-{i:02d}" for i in range(15, 21)] + [f"emodb-{s}" for s in ("12", "13", "14", "15", "16")],
}
SPLIT_SEED = {"choose": 1000, "measure": 2000}


@dataclass
class Stream:
    """One labelled stream: audio at ``rate`` and the spans (seconds) that hold speech."""

    name: str
    kind: str  # "speech" or a non-speech kind
    condition: str  # "16k", "16k-noisy", "8k-mulaw", "8k-mulaw-noisy"
    audio: np.ndarray
    rate: int
    spans: list[tuple[float, float]]
    speaker: str = ""
    family: str = "a"  # generator family of its non-speech (or of its bed)


# ---------------------------------------------------------------- non-speech

def times(n: int) -> np.ndarray:
    """Sample times (s) of ``n`` samples at :data:`SR`."""
    return np.arange(n) / SR


def unit(y: np.ndarray) -> np.ndarray:
    """``y`` scaled to unit standard deviation."""
    return y / (np.std(y) + 1e-12)


def _coloured(rng: np.random.Generator, n: int, slope: float) -> np.ndarray:
    """Noise whose power falls as f**-slope (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.arange(len(spec)), 1.0)
    spec /= f ** (slope / 2)
    return unit(np.fft.irfft(spec, n))


def _harmonic(f0: np.ndarray | float, n: int, rng: np.random.Generator, n_harm: int | None = None,
              decay: float | None = None) -> np.ndarray:
    """A tone of ``n_harm`` harmonics with amplitudes falling as k**-decay (instrument-like timbre)."""
    n_harm = int(rng.integers(1, 9)) if n_harm is None else n_harm
    decay = float(rng.uniform(0.5, 2.5)) if decay is None else decay
    phase = 2 * np.pi * np.cumsum(np.broadcast_to(f0, (n,))) / SR
    y = np.zeros(n)
    for k in range(1, n_harm + 1):
        if np.max(np.broadcast_to(f0, (n,))) * k < SR / 2 - 200:
            y += k ** -decay * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    return y


def _gated(y: np.ndarray, on_s: float, off_s: float, offset_s: float = 0.0) -> np.ndarray:
    t = (times(len(y)) + offset_s) % (on_s + off_s)
    ramp = np.clip(np.minimum(t, on_s - t) / 0.005, 0, 1)  # 5 ms ramps, no clicks
    return y * np.where(t < on_s, ramp, 0.0)


def tone(rng: np.random.Generator, n: int) -> np.ndarray:
    """A steady sine, 100 Hz - 4 kHz (sometimes two)."""
    y = np.sin(2 * np.pi * rng.uniform(100, 4000) * times(n))
    if rng.random() < 0.3:
        y += np.sin(2 * np.pi * rng.uniform(100, 4000) * times(n))
    return y


def chirp(rng: np.random.Generator, n: int) -> np.ndarray:
    """Repeated sweeps (linear or logarithmic) between two random frequencies."""
    f1, f2 = np.sort(rng.uniform(50, 7000, 2))
    period = rng.uniform(0.3, 10.0)
    frac = (times(n) % period) / period
    f = f1 * (f2 / f1) ** frac if rng.random() < 0.5 else f1 + (f2 - f1) * frac
    if rng.random() < 0.5:
        f = f[::-1].copy()
    return np.sin(2 * np.pi * np.cumsum(f) / SR)


_DTMF_LOW, _DTMF_HIGH = (697, 770, 852, 941), (1209, 1336, 1477, 1633)


def dtmf(rng: np.random.Generator, n: int) -> np.ndarray:
    """Keypad digits: two-tone bursts of 40-250 ms with 40-600 ms gaps."""
    y = np.zeros(n)
    i = int(rng.integers(0, SR // 2))
    while i < n:
        on = int(rng.uniform(0.04, 0.25) * SR)
        seg = times(min(on, n - i))
        burst = np.sin(2 * np.pi * rng.choice(_DTMF_LOW) * seg) + np.sin(2 * np.pi * rng.choice(_DTMF_HIGH) * seg)
        y[i : i + len(seg)] = burst * np.hanning(len(seg)) ** 0.1
        i += on + int(rng.uniform(0.04, 0.6) * SR)
    return y


def beeps(rng: np.random.Generator, n: int) -> np.ndarray:
    """Single-frequency beeps (0.05-0.6 s) at a steady rate: alarms, recorders, call-waiting."""
    y = np.sin(2 * np.pi * rng.uniform(300, 3500) * times(n))
    return _gated(y, rng.uniform(0.05, 0.6), rng.uniform(0.1, 3.0), rng.uniform(0, 1))


def white(rng: np.random.Generator, n: int) -> np.ndarray:
    """White noise."""
    return rng.standard_normal(n)


def pink(rng: np.random.Generator, n: int) -> np.ndarray:
    """Pink noise (1/f)."""
    return _coloured(rng, n, 1.0)


def brown(rng: np.random.Generator, n: int) -> np.ndarray:
    """Brown noise (1/f^2)."""
    return _coloured(rng, n, 2.0)


def hum(rng: np.random.Generator, n: int) -> np.ndarray:
    """Mains hum, 50 or 60 Hz with random harmonics (a buzz when they are strong)."""
    f0 = rng.choice([50.0, 60.0]) * rng.uniform(0.995, 1.005)
    y = np.zeros(n)
    for k in range(1, int(rng.integers(1, 16)) + 1):
        y += rng.uniform(0, 1) / k ** rng.uniform(0, 1.5) * np.sin(2 * np.pi * k * f0 * times(n) + rng.uniform(0, 6.3))
    return y + 1e-3 * rng.standard_normal(n)


def clicks(rng: np.random.Generator, n: int) -> np.ndarray:
    """Clicks: regular (a metronome, a relay) or random (crackle), each a short decaying burst."""
    y = np.zeros(n)
    if rng.random() < 0.5:
        at = np.arange(rng.uniform(0, 0.5), n / SR, rng.uniform(0.05, 1.0))
    else:
        at = np.sort(rng.uniform(0, n / SR, int(rng.uniform(1, 20) * n / SR)))
    length = int(rng.uniform(0.001, 0.02) * SR)
    shape = rng.standard_normal(length) * np.exp(-np.arange(length) / (length / 4 + 1))
    for a in (at * SR).astype(int):
        k = min(length, n - a)
        y[a : a + k] += shape[:k] * rng.uniform(0.3, 1)
    return y


_SCALE = np.array([0, 2, 4, 5, 7, 9, 11])


def _note_freq(rng: np.random.Generator, lo: int = 45, hi: int = 84) -> float:
    midi = int(rng.integers(lo, hi))
    midi = midi - midi % 12 + _SCALE[np.argmin(np.abs(_SCALE - midi % 12))]
    return 440.0 * 2 ** ((midi - 69) / 12)


def _envelope(m: int, rng: np.random.Generator) -> np.ndarray:
    a = max(1, int(rng.uniform(0.002, 0.08) * SR))
    t = np.arange(m)
    env = np.minimum(1.0, t / a) * np.exp(-t / (rng.uniform(0.1, 2.0) * SR))
    return env * np.clip((m - t) / (0.01 * SR), 0, 1)


def notes(rng: np.random.Generator, n: int) -> np.ndarray:
    """A melody: notes of a scale, 0.1-0.8 s each, instrument-like timbre, sometimes vibrato."""
    y = np.zeros(n)
    i = 0
    decay = rng.uniform(0.5, 2.5)
    n_harm = int(rng.integers(1, 10))
    vib = rng.uniform(0, 0.01) if rng.random() < 0.4 else 0.0
    while i < n:
        m = min(int(rng.uniform(0.1, 0.8) * SR), n - i)
        f = _note_freq(rng) * (1 + vib * np.sin(2 * np.pi * 5.5 * times(m)))
        y[i : i + m] += _harmonic(f, m, rng, n_harm, decay) * _envelope(m, rng)
        i += m
    return y


def chords(rng: np.random.Generator, n: int) -> np.ndarray:
    """Hold music: one time in three sustained chords changing every 1-3 s, sometimes with a melody on
    top; else a band of :mod:`tools.music_a` (instruments, pads, comping, strums, arpeggios, bass, drums)."""
    if rng.random() >= 1 / 3:
        from tools.music_a import band

        return band(rng, n)
    y = np.zeros(n)
    i = 0
    decay = rng.uniform(0.8, 2.5)
    while i < n:
        m = min(int(rng.uniform(1.0, 3.0) * SR), n - i)
        root = _note_freq(rng, 40, 64)
        for step in (0, 4 if rng.random() < 0.5 else 3, 7, 12 if rng.random() < 0.5 else 10):
            f = root * 2 ** (step / 12)
            y[i : i + m] += 0.5 * _harmonic(f, m, rng, int(rng.integers(2, 7)), decay) * \
                np.minimum(1, np.arange(m) / (0.05 * SR)) * np.clip((m - np.arange(m)) / (0.05 * SR), 0, 1)
        i += m
    if rng.random() < 0.6:
        y += 0.8 * notes(rng, n)
    return y


def drums(rng: np.random.Generator, n: int) -> np.ndarray:
    """One time in three a drum pattern at 70-170 bpm: kick (falling sine), snare (noise and tone),
    hi-hat (high noise); else a loop of :mod:`tools.music_a` (kits drawn at random, swing, fills)."""
    from scipy.signal import butter, sosfilt

    if rng.random() >= 1 / 3:
        from tools.music_a import loop

        return loop(rng, n)

    y = np.zeros(n)
    beat = 60.0 / rng.uniform(70, 170)
    hp = butter(4, rng.uniform(3000, 7000), "highpass", fs=SR, output="sos")
    busy_snare = rng.random() < 0.4
    every_beat = rng.random() < 0.5
    kick_lo, kick_sweep, kick_tau = rng.uniform(40, 80), rng.uniform(50, 200), rng.uniform(0.015, 0.06)
    hat = rng.uniform(0, 0.5)
    k = 0
    for a in np.arange(0, n / SR, beat / 2):
        i = int(a * SR)
        if k % 4 == 0 or (every_beat and k % 2 == 0) or (k % 4 == 3 and rng.random() < 0.3):
            m = min(int(0.3 * SR), n - i)
            f = kick_lo + kick_sweep * np.exp(-times(m) / kick_tau)
            y[i : i + m] += np.sin(2 * np.pi * np.cumsum(f) / SR) * np.exp(-times(m) / 0.12)
        if k % 4 == 2 or (busy_snare and k % 2 == 1):
            m = min(int(0.2 * SR), n - i)
            y[i : i + m] += 0.5 * (rng.standard_normal(m) + np.sin(2 * np.pi * 190 * times(m))) * np.exp(-times(m) / 0.05)
        m = min(int(0.05 * SR), n - i)
        y[i : i + m] += hat * sosfilt(hp, rng.standard_normal(m)) * np.exp(-times(m) / 0.015)
        k += 1
    return y


def bursts(rng: np.random.Generator, n: int) -> np.ndarray:
    """Noise bursts (20-250 ms, coloured, band-limited) at 1-8 per second: snares, shakers, rustle,
    typing; regular or random. Unvoiced and modulated at syllable rates, as no tone is."""
    from scipy.signal import butter, sosfilt

    y = np.zeros(n)
    rate = rng.uniform(1, 8)
    at = np.arange(rng.uniform(0, 0.3), n / SR, 1 / rate) if rng.random() < 0.5 else \
        np.sort(rng.uniform(0, n / SR, int(rate * n / SR)))
    lo, hi = np.sort(rng.uniform(100, 7500, 2))
    sos = butter(2, [lo, max(hi, lo + 200)], "bandpass", fs=SR, output="sos")
    for a in (at * SR).astype(int):
        m = min(int(rng.uniform(0.02, 0.25) * SR), n - a)
        y[a : a + m] += sosfilt(sos, rng.standard_normal(m)) * np.exp(-times(m) / rng.uniform(0.01, 0.1)) * rng.uniform(0.3, 1)
    return y


def sequence(table: dict[str, Callable[[np.random.Generator, int], np.ndarray]], rng: np.random.Generator, n: int,
             seconds: tuple[float, float], quietest_db: float) -> np.ndarray:
    """A table's kinds (but medleys and hiss) one after another, ``seconds`` long each, each at its own
    level down to ``quietest_db``: every family's medley."""
    kinds = [k for k in table if k not in ("medley", "hiss")]
    y = np.zeros(n)
    i = 0
    while i < n:
        m = min(int(rng.uniform(*seconds) * SR), n - i)
        part = table[str(rng.choice(kinds))](rng, m)
        y[i : i + m] = part / (np.sqrt(np.mean(part**2)) + 1e-12) * 10 ** (rng.uniform(quietest_db, 0) / 20)
        i += m
    return y


def medley(rng: np.random.Generator, n: int) -> np.ndarray:
    """Other kinds one after another (2-8 s each, at their own levels): the changes between them."""
    return sequence(NONSPEECH, rng, n, (2, 8), -12)


_RING = [((440, 480), 2.0, 4.0), ((400, 450), 1.0, 2.0), ((425,), 1.0, 4.0), ((450,), 1.0, 4.0)]
_BUSY = [((480, 620), 0.5, 0.5), ((425,), 0.5, 0.5), ((400,), 0.375, 0.375), ((480, 620), 0.25, 0.25)]


def _call_tone(rng: np.random.Generator, n: int, table: list) -> np.ndarray:
    freqs, on, off = table[int(rng.integers(len(table)))]
    y = sum(np.sin(2 * np.pi * f * times(n)) for f in freqs)
    return _gated(np.asarray(y, float), on, off, rng.uniform(0, on + off))


def ringback(rng: np.random.Generator, n: int) -> np.ndarray:
    """Ring-back tone (North American, UK-like, European cadences)."""
    return _call_tone(rng, n, _RING)


def busy(rng: np.random.Generator, n: int) -> np.ndarray:
    """Busy / reorder tone."""
    return _call_tone(rng, n, _BUSY)


def fan(rng: np.random.Generator, n: int) -> np.ndarray:
    """A fan or air conditioning: low-passed noise, blade-rate hum, slow wobble."""
    from scipy.signal import butter, sosfilt

    sos = butter(2, rng.uniform(300, 2500), "lowpass", fs=SR, output="sos")
    y = sosfilt(sos, rng.standard_normal(n))
    y /= np.std(y) + 1e-12
    blade = rng.uniform(20, 150)
    y += rng.uniform(0, 0.7) * _harmonic(blade, n, rng, 4, 1.0)
    return y * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.1, 1.0) * times(n)))


def line(rng: np.random.Generator, n: int) -> np.ndarray:
    """Line noise: hiss, hum and crackle together."""
    return pink(rng, n) * rng.uniform(0.2, 1) + hum(rng, n) * rng.uniform(0, 1) + \
        clicks(rng, n) * rng.uniform(0, 2) + white(rng, n) * rng.uniform(0.1, 1)


def hiss(rng: np.random.Generator, n: int) -> np.ndarray:
    """Silence with hiss: a quiet line (its level is set low by :func:`nonspeech_stream`)."""
    return white(rng, n) + 0.5 * pink(rng, n)


NONSPEECH: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    f.__name__: f for f in (tone, chirp, dtmf, beeps, white, pink, brown, hum, clicks, notes, chords,
                            drums, bursts, ringback, busy, fan, line, hiss, medley)
}
#: beds mixed under speech (noise and music a caller's voice competes with)
BEDS = ("white", "pink", "brown", "fan", "line", "hum", "notes", "chords", "drums")
CONDITIONS = ("16k", "16k-noisy", "8k-mulaw", "8k-mulaw-noisy")


def _level(y: np.ndarray, db: float) -> np.ndarray:
    return y * (10 ** (db / 20) / (np.sqrt(np.mean(y**2)) + 1e-12))


def telephone(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """16 kHz -> 8 kHz mu-law (often band-passed 300-3400 Hz as a phone line), decoded at 8 kHz."""
    import soxr
    from scipy.signal import butter, sosfilt

    lo = soxr.resample(y.astype(np.float32), SR, 8000, quality="HQ")
    if rng.random() < 0.7:
        lo = sosfilt(butter(4, [300, 3400], "bandpass", fs=8000, output="sos"), lo)
    return mulaw_decode(mulaw_encode(np.clip(lo, -1, 1)))


#: generator families: ``a`` (this module), ``b`` (:mod:`tools.nonspeech_other`), ``c``
#: (:mod:`tools.nonspeech_third`): every kind made three independent ways
FAMILIES = ("a", "b", "c")
#: the family a split uses unless told otherwise: the measure split hears what training did not
DEFAULT_FAMILY = {"choose": "a", "measure": "b"}


def generators(family: str) -> dict[str, Callable[[np.random.Generator, int], np.ndarray]]:
    """The non-speech generators of a family (``a``, ``b`` or ``c``)."""
    from tools.nonspeech_other import NONSPEECH_OTHER
    from tools.nonspeech_third import NONSPEECH_THIRD

    tables = {"a": NONSPEECH, "b": NONSPEECH_OTHER, "c": NONSPEECH_THIRD}
    if family not in tables:
        raise ValueError(f"unknown generator family {family!r} (expected one of {', '.join(FAMILIES)})")
    return tables[family]


def family_of(table: dict[str, Callable[[np.random.Generator, int], np.ndarray]]) -> str:
    """The family name of a generator table."""
    return next(f for f in FAMILIES if generators(f) is table)


def check_families(families: str) -> str:
    """``families`` (e.g. ``ab``) if every letter names a family, once; else ValueError."""
    if not families or len(set(families)) != len(families) or not set(families) <= set(FAMILIES):
        raise ValueError(f"families are letters of {''.join(FAMILIES)}, each once, not {families!r}")
    return families


def nonspeech_stream(kind: str, rng: np.random.Generator, seconds: float, tel: bool, name: str,
                     table: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = NONSPEECH) -> Stream:
    """One stream of a non-speech kind at a random level (hiss: -75..-50 dBFS)."""
    n = int(seconds * SR)
    y = table[kind](rng, n)
    db = rng.uniform(-75, -50) if kind == "hiss" else rng.uniform(-40, -12)
    y = _level(y, db)
    if kind != "hiss" and rng.random() < 0.5:  # a quiet line under it
        y = y + _level(rng.standard_normal(n), db - rng.uniform(25, 50))
    y = np.clip(y, -1, 1).astype(np.float32)
    fam = family_of(table)
    if tel:
        return Stream(name, kind, "8k-mulaw", telephone(y, rng), 8000, [], family=fam)
    return Stream(name, kind, "16k", y, SR, [], family=fam)


#: a mixture's second kind lies this many dB above or below its first
MIX_DB = 12.0


def mixture_stream(table: dict[str, Callable[[np.random.Generator, int], np.ndarray]], rng: np.random.Generator,
                   seconds: float, tel: bool, name: str) -> Stream:
    """Two kinds of a family at once (the second -12..+12 dB from the first): a training sound that no
    single kind makes, so a head learns what non-speech shares rather than each generator's sound
    (tools/train_speech.py ``--mixtures``; mixtures are never measured)."""
    n = int(seconds * SR)
    kinds = [k for k in table if k not in ("medley", "hiss")]
    a, b = rng.choice(kinds, 2, replace=False)
    y = _level(table[str(a)](rng, n), 0.0) + _level(table[str(b)](rng, n), rng.uniform(-MIX_DB, MIX_DB))
    y = np.clip(_level(y, rng.uniform(-40, -12)), -1, 1).astype(np.float32)
    fam = family_of(table)
    if tel:
        return Stream(name, "mixture", "8k-mulaw", telephone(y, rng), 8000, [], family=fam)
    return Stream(name, "mixture", "16k", y, SR, [], family=fam)


# ---------------------------------------------------------------- speech

def speech_items(root: Path = DATA) -> dict[str, list[Item]]:
    """RAVDESS (speech, audio only) and EmoDB clips, by speaker."""
    by: dict[str, list[Item]] = {}
    for corpus, sub in (("ravdess", "ravdess-speech-16k"), ("emodb", "emodb-16k")):
        for it in scan(root / sub, corpus, keep_unmapped=True):
            by.setdefault(it.speaker, []).append(it)
    for v in by.values():
        v.sort(key=lambda it: it.path)
    return by


def active_span(y: np.ndarray, below_peak_db: float = 30.0) -> tuple[float, float] | None:
    """First to last 20 ms frame within ``below_peak_db`` of the clip's loudest (its utterance)."""
    hop = SR // 50
    m = len(y) // hop
    if m == 0:
        return None
    e = 10 * np.log10(np.mean(y[: m * hop].reshape(m, hop).astype(np.float64) ** 2, axis=1) + 1e-12)
    on = np.flatnonzero(e > max(e.max() - below_peak_db, -60))
    if len(on) == 0:
        return None
    return on[0] * hop / SR, (on[-1] + 1) * hop / SR


def speech_stream(items: list[Item], rng: np.random.Generator, seconds: float, condition: str,
                  name: str, table: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = NONSPEECH) -> Stream:
    """One speaker's clips in a row, 0.2-2.5 s apart, as ``condition`` (see :data:`CONDITIONS`)."""
    import soundfile as sf

    parts: list[np.ndarray] = []
    spans: list[tuple[float, float]] = []
    t = 0.0
    order = rng.permutation(len(items))
    k = 0
    while t < seconds and k < len(order):
        y, sr = sf.read(items[order[k]].path, dtype="float32", always_2d=True)
        k += 1
        y = y.mean(axis=1)
        if sr != SR:
            continue
        span = active_span(y)
        if span is None:
            continue
        gap = np.zeros(int(rng.uniform(0.2, 2.5) * SR), np.float32)
        parts += [gap, y]
        t += len(gap) / SR
        spans.append((t + span[0], t + span[1]))
        t += len(y) / SR
    y = np.concatenate(parts + [np.zeros(int(0.5 * SR), np.float32)])
    y = y / (np.max(np.abs(y)) + 1e-9) * 10 ** (rng.uniform(-30, -1) / 20)  # peak level
    if condition.endswith("noisy"):
        bed = table[str(rng.choice(BEDS))](rng, len(y))
        mask = np.zeros(len(y), bool)
        for a, b in spans:
            mask[int(a * SR) : int(b * SR)] = True
        p_speech = float(np.mean(y[mask].astype(np.float64) ** 2))
        snr = rng.uniform(0, 20)
        y = y + _level(bed, 10 * np.log10(p_speech + 1e-12) - snr)
        name += f"-snr{snr:.0f}"
    y = np.clip(y, -1, 1).astype(np.float32)
    speaker = items[0].speaker
    fam = family_of(table)
    if condition.startswith("8k"):
        return Stream(name, "speech", condition, telephone(y, rng), 8000, spans, speaker, fam)
    return Stream(name, "speech", condition, y, SR, spans, speaker, fam)


def streams(split: str, per_kind: int = 3, seconds: float = 30.0, speech_seconds: float = 45.0,
            root: Path = DATA, noisy: int = 1, families: str | None = None, mixtures: int = 0) -> Iterator[Stream]:
    """Every stream of a split: ``per_kind`` streams per non-speech kind, condition (16 kHz and
    8 kHz mu-law) and generator family (``families``: ``a``, ``b`` or ``ab``; the split's default
    family when None), ``mixtures`` streams of two kinds at once per condition and family (training
    only), and per speaker one speech stream of each clean condition and ``noisy`` of each noisy one
    (each with its own bed and SNR; beds alternate between the families)."""
    base = SPLIT_SEED[split]
    fams = check_families(families or DEFAULT_FAMILY[split])
    for fam in fams:
        table = generators(fam)
        for ki, kind in enumerate(NONSPEECH):
            for tel in (False, True):
                for r in range(per_kind):
                    # family a keeps the seeds it always had, so its streams do not change
                    rng = np.random.default_rng([base, ki, int(tel), r] + ([FAMILIES.index(fam)] if fam != "a" else []))
                    yield nonspeech_stream(kind, rng, seconds, tel, f"{kind}-{'8k' if tel else '16k'}-{fam}{r}", table)
        for tel in (False, True):
            for r in range(mixtures):
                rng = np.random.default_rng([base, 500, int(tel), r, FAMILIES.index(fam)])
                yield mixture_stream(table, rng, seconds, tel, f"mixture-{'8k' if tel else '16k'}-{fam}{r}")
    by = speech_items(root)
    for si, spk in enumerate(SPEAKERS[split]):
        if spk not in by:
            continue
        for ci, cond in enumerate(CONDITIONS):
            for r in range(noisy if cond.endswith("noisy") else 1):
                rng = np.random.default_rng([base, 100 + si, ci] + ([r] if r else []))
                # beds alternate between the families, the last one first (the measure split's "ab":
                # speech under family b's beds, which a head trained on family a never heard)
                table = generators(fams[-1 - r % len(fams)])
                yield speech_stream(by[spk], rng, speech_seconds, cond, f"{spk}-{cond}" + (f"-{r}" if r else ""), table)


def main(argv: list[str] | None = None) -> int:
    """List the set or write a few of its streams as WAV files."""
    ap = argparse.ArgumentParser(prog="python -m tools.speech_set", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=sorted(SPEAKERS), default="measure")
    ap.add_argument("--list", action="store_true", help="print the kinds, conditions and speakers")
    ap.add_argument("--write", metavar="DIR", help="write streams as WAV files into DIR")
    ap.add_argument("--limit", type=int, default=0, help="stop after this many streams")
    ap.add_argument("--families", type=check_families, default=None,
                    help="non-speech generator families (default: a for choose, b for measure)")
    args = ap.parse_args(argv)
    if args.list or not args.write:
        print("non-speech kinds:", ", ".join(NONSPEECH))
        print("speech conditions:", ", ".join(CONDITIONS), "| beds:", ", ".join(BEDS))
        for s, spk in SPEAKERS.items():
            print(f"{s} speakers:", ", ".join(spk))
        return 0
    import soundfile as sf

    out = Path(args.write)
    out.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(streams(args.split, families=args.families)):
        if args.limit and i >= args.limit:
            break
        sf.write(out / f"{s.name}.wav", s.audio, s.rate)
        print(out / f"{s.name}.wav", s.kind, s.condition, f"{len(s.audio) / s.rate:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
