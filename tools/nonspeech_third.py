"""Third renditions of every non-speech kind (generator family ``c`` of tools/speech_set.py).

Family ``a`` (tools/speech_set.py) trains the speech detector and family ``b``
(tools/nonspeech_other.py) measured it on sounds it never heard. With a third family, a head
trained on two families is measured on a third: the test of whether more varied training sounds
carry over to sounds made yet another way. Each kind is made here by other means again: amplitude or
frequency modulated tones, bird-like chirps, modem and fax tones, two-tone sirens, velvet and
Voss-McCartney noise, a sawtooth buzz, Morse code, an inharmonic piano, guitar strums, an electronic
drum machine, rain, other countries' call tones, a vacuum cleaner, GSM interference, tape hiss.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import signal

from tools.speech_set import SR, sequence, times, unit


def tone(rng: np.random.Generator, n: int) -> np.ndarray:
    """A tone with slow amplitude or frequency modulation (tremolo, vibrato, a theremin)."""
    f0 = float(np.exp(rng.uniform(np.log(150), np.log(3000))))
    t = times(n)
    if rng.random() < 0.5:
        return np.sin(2 * np.pi * f0 * t) * (1 + rng.uniform(0.2, 0.9) * np.sin(2 * np.pi * rng.uniform(0.5, 8) * t))
    dev = rng.uniform(0.005, 0.05) * f0
    f = f0 + dev * np.sin(2 * np.pi * rng.uniform(0.3, 7) * t)
    return np.sin(2 * np.pi * np.cumsum(f) / SR)


def chirp(rng: np.random.Generator, n: int) -> np.ndarray:
    """Bird-like calls: short (30-200 ms) steep sweeps in trills, 2-8 kHz."""
    y = np.zeros(n)
    i = int(rng.uniform(0, 0.3) * SR)
    f_hi = rng.uniform(3000, 7500)
    while i < n:
        for _ in range(int(rng.integers(1, 8))):
            m = min(int(rng.uniform(0.03, 0.2) * SR), n - i)
            if m <= 0:
                break
            f = f_hi * np.exp(-times(m) / rng.uniform(0.02, 0.2)) + 1500
            y[i : i + m] += np.sin(2 * np.pi * np.cumsum(f) / SR) * np.hanning(m)
            i += m + int(rng.uniform(0.01, 0.08) * SR)
        i += int(rng.uniform(0.3, 2.0) * SR)
    return y


def dtmf(rng: np.random.Generator, n: int) -> np.ndarray:
    """Machine tones on a line: fax calling tone (1100 Hz, 0.5 s in 3.5 s), modem answer tone
    (2100 Hz with phase reversals every 450 ms) or MF signalling pairs (700-1700 Hz)."""
    t = times(n)
    kind = int(rng.integers(3))
    if kind == 0:
        return np.sin(2 * np.pi * 1100 * t) * ((t + rng.uniform(0, 3.5)) % 3.5 < 0.5)
    if kind == 1:
        flip = np.where((t // 0.45) % 2 == 0, 0.0, np.pi)
        return np.sin(2 * np.pi * 2100 * t + flip)
    y = np.zeros(n)
    freqs = (700, 900, 1100, 1300, 1500, 1700)
    i = 0
    while i < n:
        m = min(int(rng.uniform(0.055, 0.1) * SR), n - i)
        a, b = rng.choice(freqs, 2, replace=False)
        y[i : i + m] = np.sin(2 * np.pi * a * times(m)) + np.sin(2 * np.pi * b * times(m))
        i += m + int(rng.uniform(0.05, 0.7) * SR)
    return y


def beeps(rng: np.random.Generator, n: int) -> np.ndarray:
    """A two-tone siren (hi-lo) or an alarm clock's warble."""
    t = times(n)
    lo = rng.uniform(400, 1200)
    hi = lo * rng.uniform(1.2, 1.6)
    period = rng.uniform(0.2, 1.5)
    f = np.where((t % period) < period / 2, lo, hi)
    y = np.sin(2 * np.pi * np.cumsum(f) / SR)
    return y * (0.6 + 0.4 * signal.square(2 * np.pi * rng.uniform(2, 10) * t)) if rng.random() < 0.4 else y


def white(rng: np.random.Generator, n: int) -> np.ndarray:
    """Velvet noise (sparse random +-1 impulses, 2-8 k per second) through a gentle low-pass."""
    y = np.zeros(n)
    y[rng.random(n) < rng.uniform(2000, 8000) / SR] = rng.choice([-1.0, 1.0])
    return unit(signal.sosfilt(signal.butter(1, 7000, "lowpass", fs=SR, output="sos"), y))


def pink(rng: np.random.Generator, n: int) -> np.ndarray:
    """Pink noise by the Voss-McCartney algorithm (random rows updated at octave rates)."""
    rows = 12
    y = np.zeros(n)
    for r in range(rows):
        step = 2**r
        vals = rng.standard_normal(n // step + 2)
        y += np.repeat(vals, step)[:n]
    return unit(y - np.mean(y) + rng.standard_normal(n))


def brown(rng: np.random.Generator, n: int) -> np.ndarray:
    """Rumble: low-passed (40-200 Hz) noise, wind-like and slowly swelling."""
    sos = signal.butter(2, rng.uniform(40, 200), "lowpass", fs=SR, output="sos")
    y = unit(signal.sosfilt(sos, rng.standard_normal(n)))
    return y * (1 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * times(n)))


def hum(rng: np.random.Generator, n: int) -> np.ndarray:
    """An electrical buzz: a mains-rate sawtooth or pulse train, band-limited."""
    f = float(rng.choice([50.0, 60.0, 100.0, 120.0]))
    t = times(n)
    y = signal.sawtooth(2 * np.pi * f * t) if rng.random() < 0.5 else signal.square(2 * np.pi * f * t, duty=rng.uniform(0.05, 0.3))
    return unit(signal.sosfilt(signal.butter(2, rng.uniform(1000, 6000), "lowpass", fs=SR, output="sos"), y))


def clicks(rng: np.random.Generator, n: int) -> np.ndarray:
    """Morse code on a 500-900 Hz tone, or a turn signal's tick-tock."""
    t = times(n)
    if rng.random() < 0.5:
        dot = rng.uniform(0.04, 0.12)
        gate = np.zeros(n, bool)
        i = 0
        while i < n:
            m = int(dot * SR * (3 if rng.random() < 0.4 else 1))
            gate[i : i + m] = True
            i += m + int(dot * SR * (1 if rng.random() < 0.7 else 3))
        return np.sin(2 * np.pi * rng.uniform(500, 900) * t) * gate
    y = np.zeros(n)
    period = rng.uniform(0.35, 0.8)
    for k, a in enumerate(np.arange(0, n / SR, period / 2)):
        i = int(a * SR)
        m = min(int(0.01 * SR), n - i)
        y[i : i + m] = np.sin(2 * np.pi * (2500 if k % 2 else 1800) * times(m)) * np.exp(-times(m) / 0.002)
    return y


def _piano(f: float, m: int, rng: np.random.Generator) -> np.ndarray:
    """An inharmonic, struck-string note (partials stretched by B, faster decay up high)."""
    t = times(m)
    b = rng.uniform(1e-4, 8e-4)
    y = np.zeros(m)
    for k in range(1, 10):
        fk = k * f * np.sqrt(1 + b * k * k)
        if fk > 7500:
            break
        y += np.sin(2 * np.pi * fk * t) * np.exp(-t * (1.5 + 0.8 * k)) / k
    return y * np.minimum(1, t / 0.003)


def notes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Piano playing: single notes and octaves, sometimes two at once, with sustain overlaps."""
    y = np.zeros(n)
    i = 0
    root = 130.8 * 2 ** (rng.integers(0, 12) / 12)
    while i < n:
        m = min(int(rng.uniform(0.6, 1.5) * SR), n - i)
        for step in rng.choice([0, 2, 3, 5, 7, 8, 10, 12, 15], int(rng.integers(1, 3)), replace=False):
            y[i : i + m] += _piano(root * 2 ** (step / 12), m, rng)
        i += int(rng.uniform(0.15, 0.5) * SR)
    return y


def _string(f: float, m: int, rng: np.random.Generator) -> np.ndarray:
    """A guitar-like string: a decaying harmonic series with a brighter attack."""
    t = times(m)
    y = np.zeros(m)
    for k in range(1, 12):
        if k * f > 7500:
            break
        y += np.sin(2 * np.pi * k * f * t + rng.uniform(0, 6.3)) * np.exp(-t * (0.8 + 1.2 * k)) / k ** 0.8
    return y


def chords(rng: np.random.Generator, n: int) -> np.ndarray:
    """Guitar strums: chords strummed every 0.5-2 s, strings 10-30 ms apart, over a soft bass."""
    y = np.zeros(n)
    i = 0
    while i < n:
        m = min(int(rng.uniform(0.5, 2.0) * SR), n - i)
        root = 82.4 * 2 ** (rng.integers(0, 12) / 12)
        gap = int(rng.uniform(0.01, 0.03) * SR)
        for s, step in enumerate((0, 7, 12, 16 if rng.random() < 0.5 else 15, 19, 24)):
            a = i + s * gap
            k = min(m, n - a)
            if k > 0:
                y[a : a + k] += _string(root * 2 ** (step / 12), k, rng)
        i += m
    return y


def drums(rng: np.random.Generator, n: int) -> np.ndarray:
    """A drum machine: 808-style kick (long falling sine), clap, closed and open hats (square-wave
    metal), 16 steps a bar at 80-160 bpm with a random pattern per stream."""
    y = np.zeros(n)
    step = 60.0 / rng.uniform(80, 160) / 4
    kick, clap, hat = (rng.random(16) < p for p in (0.25, 0.15, 0.6))
    kick[0] = True
    hp = signal.butter(2, 7000, "highpass", fs=SR, output="sos")
    bp = signal.butter(2, [1000, 2000], "bandpass", fs=SR, output="sos")
    metal = sum(signal.square(2 * np.pi * f * times(int(0.3 * SR))) for f in (205, 304, 369, 522, 540, 800))
    for k, a in enumerate(np.arange(0, n / SR, step)):
        i = int(a * SR)
        s = k % 16
        if kick[s]:
            m = min(int(0.5 * SR), n - i)
            f = 45 + 120 * np.exp(-times(m) / 0.03)
            y[i : i + m] += np.sin(2 * np.pi * np.cumsum(f) / SR) * np.exp(-times(m) / 0.25)
        if clap[s]:
            m = min(int(0.15 * SR), n - i)
            y[i : i + m] += 0.6 * signal.sosfilt(bp, rng.standard_normal(m)) * np.exp(-times(m) / 0.03)
        if hat[s]:
            m = min(int((0.3 if rng.random() < 0.2 else 0.05) * SR), n - i)
            y[i : i + m] += 0.1 * signal.sosfilt(hp, metal[:m]) * np.exp(-times(m) / (m / SR / 3))
    return y


def bursts(rng: np.random.Generator, n: int) -> np.ndarray:
    """Rain or applause: many overlapping tiny decaying noise grains at random times."""
    y = np.zeros(n)
    count = int(rng.uniform(20, 300) * n / SR)
    bp = signal.butter(2, sorted(rng.uniform(500, 7000, 2) + [0, 300]), "bandpass", fs=SR, output="sos")
    grain = signal.sosfilt(bp, rng.standard_normal(int(0.02 * SR))) * np.exp(-times(int(0.02 * SR)) / 0.004)
    for a in rng.integers(0, n, count):
        k = min(len(grain), n - a)
        y[a : a + k] += grain[:k] * rng.uniform(0.1, 1)
    return y


_RING = [((440,), 1.5, 3.5), ((425,), 0.8, 4.0), ((400, 440), 0.8, 3.2)]
_BUSY = [((440,), 0.5, 0.5), ((425,), 0.48, 0.48), ((480, 620), 0.3, 0.2)]


def _tone_cadence(rng: np.random.Generator, n: int, table: list) -> np.ndarray:
    freqs, on, off = table[int(rng.integers(len(table)))]
    y = sum(np.sin(2 * np.pi * f * times(n)) for f in freqs)
    t = (times(n) + rng.uniform(0, on + off)) % (on + off)
    return np.asarray(y, float) * (t < on) * (1 + 0.05 * rng.standard_normal())


def ringback(rng: np.random.Generator, n: int) -> np.ndarray:
    """Ring-back tones of yet other cadences, sometimes through a distorting line (clipped)."""
    y = _tone_cadence(rng, n, _RING)
    return np.clip(y, -0.6, 0.6) if rng.random() < 0.3 else y


def busy(rng: np.random.Generator, n: int) -> np.ndarray:
    """Busy / congestion tones of yet other cadences, sometimes clipped."""
    y = _tone_cadence(rng, n, _BUSY)
    return np.clip(y, -0.6, 0.6) if rng.random() < 0.3 else y


def fan(rng: np.random.Generator, n: int) -> np.ndarray:
    """A vacuum cleaner or a drill: a motor whine rising and falling over high-passed noise."""
    t = times(n)
    base = rng.uniform(150, 600)
    f = base * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t))
    whine = sum(np.sin(2 * np.pi * k * np.cumsum(f) / SR) / k for k in (1, 2, 3, 4))
    noise = unit(signal.sosfilt(signal.butter(2, rng.uniform(500, 3000), "highpass", fs=SR, output="sos"),
                                 rng.standard_normal(n)))
    return noise + rng.uniform(0.2, 1.0) * whine


def line(rng: np.random.Generator, n: int) -> np.ndarray:
    """GSM interference: 217 Hz bursts of a buzz, over a faint hiss."""
    t = times(n)
    burst = ((t * 217) % 1.0) < rng.uniform(0.1, 0.3)
    buzz = signal.square(2 * np.pi * rng.uniform(800, 2000) * t)
    on = ((t + rng.uniform(0, 2)) % rng.uniform(1, 4)) < rng.uniform(0.3, 1.5)
    return buzz * burst * on + 0.05 * rng.standard_normal(n)


def hiss(rng: np.random.Generator, n: int) -> np.ndarray:
    """Tape hiss: high-shelved noise with a faint wow (its level is set low by the stream builder)."""
    y = signal.sosfilt(signal.butter(1, 2000, "highpass", fs=SR, output="sos"), rng.standard_normal(n))
    return unit(y) * (1 + 0.1 * np.sin(2 * np.pi * 0.5 * times(n)))


def medley(rng: np.random.Generator, n: int) -> np.ndarray:
    """The kinds here one after another (2-5 s each, at their own levels)."""
    return sequence(NONSPEECH_THIRD, rng, n, (2, 5), -10)


NONSPEECH_THIRD: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    f.__name__: f for f in (tone, chirp, dtmf, beeps, white, pink, brown, hum, clicks, notes, chords,
                            drums, bursts, ringback, busy, fan, line, hiss, medley)
}
