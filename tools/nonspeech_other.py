"""Second renditions of every non-speech kind, used by the speech set's ``measure`` split only.

The ``choose`` split (the speech detector's training data) draws its non-speech from
:data:`tools.speech_set.NONSPEECH`. Measured on sounds from the same generators, a head can score
well by recognising the generator rather than the kind of sound. Each function here makes the same
kind another way (other synthesis, other parameter ranges, other standards' cadences), so the
measure split asks what a user would ask: does the detector reject a tone, a drum loop, hold
music it has never heard? Same signature as the training generators: ``(rng, n) -> samples`` at 16 kHz.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import signal

from tools.speech_set import SR, sequence, times, unit


def tone(rng: np.random.Generator, n: int) -> np.ndarray:
    """A square, sawtooth or triangle wave (odd/all harmonics), 60 Hz - 2 kHz, band-limited to 7.5 kHz."""
    f0 = float(np.exp(rng.uniform(np.log(60), np.log(2000))))
    shape = int(rng.integers(3))
    y = np.zeros(n)
    t = times(n)
    for k in range(1, int(7500 / f0) + 1):
        if shape == 0 and k % 2 == 0:
            continue
        a = 1 / k if shape < 2 else (1 / k**2 if k % 2 else 0.0)
        y += a * np.sin(2 * np.pi * k * f0 * t)
    return y


def chirp(rng: np.random.Generator, n: int) -> np.ndarray:
    """scipy's quadratic or hyperbolic sweeps, up and down (a siren when short), sometimes with a harmonic."""
    f0, f1 = np.sort(rng.uniform(150, 6000, 2))
    period = rng.uniform(0.2, 4.0)
    method = str(rng.choice(["quadratic", "hyperbolic"]))
    tt = times(n) % period
    if rng.random() < 0.5:  # siren: up then down
        tt = np.where(tt < period / 2, tt, period - tt) * 2
    y = signal.chirp(tt, f0, period, f1, method=method)
    if rng.random() < 0.4:
        y = y + 0.4 * signal.chirp(tt, 2 * f0, period, min(2 * f1, 7500), method=method)
    return y


_DTMF_LOW, _DTMF_HIGH = (697, 770, 852, 941), (1209, 1336, 1477)


def dtmf(rng: np.random.Generator, n: int) -> np.ndarray:
    """Dialled numbers: groups of 3-11 digits at the standard's pace (50-100 ms tones, 50-100 ms gaps),
    pauses between groups, a twist of up to 4 dB between the two tones."""
    y = np.zeros(n)
    i = int(rng.uniform(0, 1) * SR)
    while i < n:
        for _ in range(int(rng.integers(3, 12))):
            m = min(int(rng.uniform(0.05, 0.1) * SR), n - i)
            if m <= 0:
                break
            t = times(m)
            twist = 10 ** (rng.uniform(-4, 4) / 20)
            y[i : i + m] = np.sin(2 * np.pi * rng.choice(_DTMF_LOW) * t) + twist * np.sin(2 * np.pi * rng.choice(_DTMF_HIGH) * t)
            i += m + int(rng.uniform(0.05, 0.1) * SR)
        i += int(rng.uniform(0.5, 3.0) * SR)
    return y


def beeps(rng: np.random.Generator, n: int) -> np.ndarray:
    """Square-wave beeps in pairs or triples (a truck reversing, a microwave, a pager)."""
    f = rng.uniform(800, 3000)
    on, gap, rest = rng.uniform(0.08, 0.4), rng.uniform(0.05, 0.2), rng.uniform(0.5, 2.0)
    count = int(rng.integers(1, 4))
    period = count * (on + gap) + rest
    t = times(n) % period
    k = np.minimum(t // (on + gap), count)
    gate = (k < count) & ((t - k * (on + gap)) < on)
    return signal.square(2 * np.pi * f * times(n)) * 0.5 * gate


def white(rng: np.random.Generator, n: int) -> np.ndarray:
    """White noise, uniform or Laplacian samples (not Gaussian)."""
    return rng.uniform(-1, 1, n) if rng.random() < 0.5 else rng.laplace(size=n)


def pink(rng: np.random.Generator, n: int) -> np.ndarray:
    """Pink noise from Kellet's IIR filter of white noise (not an FFT shaping)."""
    b = [0.049922035, -0.095993537, 0.050612699, -0.004408786]
    a = [1, -2.494956002, 2.017265875, -0.522189400]
    return unit(signal.lfilter(b, a, rng.standard_normal(n + 4000))[4000:])


def brown(rng: np.random.Generator, n: int) -> np.ndarray:
    """Brown noise as a leaky random walk."""
    y = signal.lfilter([1.0], [1.0, -rng.uniform(0.995, 0.9995)], rng.standard_normal(n + 8000))[8000:]
    return unit(y - np.mean(y))


def hum(rng: np.random.Generator, n: int) -> np.ndarray:
    """A buzz: full-wave rectified mains (100/120 Hz and its even harmonics), or a transformer's 2f hum."""
    f = rng.choice([50.0, 60.0])
    y = np.abs(np.sin(2 * np.pi * f * times(n))) if rng.random() < 0.5 else np.sin(2 * np.pi * 2 * f * times(n)) ** 3
    return unit(y - np.mean(y))


def clicks(rng: np.random.Generator, n: int) -> np.ndarray:
    """Single-sample impulses or short square pulses: a ticking clock, a Geiger counter, a bad cable."""
    y = np.zeros(n)
    if rng.random() < 0.5:
        at = np.arange(int(rng.uniform(0, 0.2) * SR), n, int(rng.uniform(0.2, 1.0) * SR))
    else:
        at = np.flatnonzero(rng.random(n) < rng.uniform(2, 30) / SR)
    width = int(rng.integers(1, 8))
    for a in at:
        y[a : a + width] = rng.choice([-1.0, 1.0])
    return y


def _pluck(f: float, m: int, rng: np.random.Generator) -> np.ndarray:
    """Karplus-Strong plucked string."""
    p = max(2, int(SR / f))
    buf = rng.uniform(-1, 1, p)
    out = np.empty(m)
    for i in range(m):
        out[i] = buf[i % p]
        buf[i % p] = 0.996 * 0.5 * (buf[i % p] + buf[(i + 1) % p])
    return out


def _fm(f: float, m: int, rng: np.random.Generator) -> np.ndarray:
    """An FM bell / electric piano note."""
    t = times(m)
    ratio, index = rng.choice([1.0, 2.0, 3.5, 1.4]), rng.uniform(0.5, 5)
    env = np.exp(-t / rng.uniform(0.2, 1.5))
    return np.sin(2 * np.pi * f * t + index * env * np.sin(2 * np.pi * ratio * f * t)) * env


def notes(rng: np.random.Generator, n: int) -> np.ndarray:
    """A tune on a plucked string or an FM bell, notes of 0.15-0.6 s, pentatonic."""
    y = np.zeros(n)
    voice = _pluck if rng.random() < 0.5 else _fm
    root = 220 * 2 ** (rng.integers(-5, 12) / 12)
    i = 0
    while i < n:
        m = min(int(rng.uniform(0.15, 0.6) * SR), n - i)
        step = rng.choice([0, 2, 4, 7, 9, 12, 14, 16])
        y[i : i + m] += voice(root * 2 ** (step / 12), m, rng)
        i += m
    return y


def chords(rng: np.random.Generator, n: int) -> np.ndarray:
    """Hold music: a string-pad (detuned sawtooths through a low-pass) over a plucked bass line."""
    y = np.zeros(n)
    lp = signal.butter(2, rng.uniform(1200, 4000), "lowpass", fs=SR, output="sos")
    i = 0
    while i < n:
        m = min(int(rng.uniform(1.5, 4.0) * SR), n - i)
        root = 110 * 2 ** (rng.integers(0, 12) / 12)
        t = times(m)
        pad = sum(signal.sawtooth(2 * np.pi * root * 2 ** (s / 12) * (1 + d) * t)
                  for s in (0, 4, 7, 12) for d in (-0.003, 0.003))
        fade = np.minimum(1, t / 0.2) * np.minimum(1, (m / SR - t) / 0.2)
        y[i : i + m] += signal.sosfilt(lp, pad) * fade * 0.3
        for b in range(0, m, SR // 2):
            k = min(SR // 2, m - b)
            y[i + b : i + b + k] += 0.8 * _pluck(root / 2, k, rng)
        i += m
    return y


def drums(rng: np.random.Generator, n: int) -> np.ndarray:
    """A sampled-kit-like loop: noise-body kick (low-passed burst), hand claps (3 quick bursts), toms
    (decaying sines 80-300 Hz), a ride (metallic partials); 60-180 bpm, random fills."""
    y = np.zeros(n)
    beat = 60.0 / rng.uniform(60, 180)
    lp = signal.butter(2, 150, "lowpass", fs=SR, output="sos")
    bp = signal.butter(2, [800, 2500], "bandpass", fs=SR, output="sos")
    ride_f = rng.uniform(300, 700) * np.array([1.0, 1.47, 2.09, 2.56, 3.9])
    k = 0
    for a in np.arange(0, n / SR, beat / 2):
        i = int(a * SR)
        if k % 4 == 0:
            m = min(int(0.25 * SR), n - i)
            y[i : i + m] += 3 * signal.sosfilt(lp, rng.standard_normal(m)) * np.exp(-times(m) / 0.08)
        if k % 4 == 2:
            for c in range(3):
                j = i + int(c * 0.012 * SR)
                m = min(int(0.06 * SR), n - j)
                if m > 0:
                    y[j : j + m] += signal.sosfilt(bp, rng.standard_normal(m)) * np.exp(-times(m) / 0.02)
        if rng.random() < 0.25:
            m = min(int(0.3 * SR), n - i)
            y[i : i + m] += np.sin(2 * np.pi * rng.uniform(80, 300) * times(m)) * np.exp(-times(m) / 0.1)
        m = min(int(0.4 * SR), n - i)
        y[i : i + m] += 0.15 * sum(np.sin(2 * np.pi * f * times(m)) for f in ride_f) * np.exp(-times(m) / 0.15)
        k += 1
    return y


def bursts(rng: np.random.Generator, n: int) -> np.ndarray:
    """Typing and footsteps: clusters of short high-passed transients at irregular intervals."""
    y = np.zeros(n)
    hp = signal.butter(2, rng.uniform(500, 3000), "highpass", fs=SR, output="sos")
    i = int(rng.uniform(0, 0.5) * SR)
    while i < n:
        m = min(int(rng.uniform(0.005, 0.04) * SR), n - i)
        y[i : i + m] += signal.sosfilt(hp, rng.standard_normal(m)) * np.exp(-times(m) / 0.005) * rng.uniform(0.3, 1)
        i += int(rng.exponential(rng.uniform(0.08, 0.4)) * SR) + m
    return y


_RING = [((400, 450), 0.4, 0.2, 0.4, 2.0), ((425,), 1.5, 3.5, 0, 0), ((440, 480), 1.0, 3.0, 0, 0)]
_BUSY = [((425,), 0.35, 0.35, 0, 0), ((400,), 0.5, 0.5, 0, 0), ((440, 480), 0.25, 0.25, 0, 0)]


def _cadence(rng: np.random.Generator, n: int, table: list) -> np.ndarray:
    """Double-ring cadences (on, off, on, long off) and Japan's 16 Hz modulated ring."""
    freqs, on1, off1, on2, off2 = table[int(rng.integers(len(table)))]
    y = sum(np.sin(2 * np.pi * f * times(n)) for f in freqs)
    if rng.random() < 0.3:
        y = y * (1 + 0.8 * np.sin(2 * np.pi * 16 * times(n)))
    period = on1 + off1 + on2 + off2 if on2 else on1 + off1
    t = (times(n) + rng.uniform(0, period)) % period
    gate = (t < on1) | ((t >= on1 + off1) & (t < on1 + off1 + on2))
    return np.asarray(y, float) * gate


def ringback(rng: np.random.Generator, n: int) -> np.ndarray:
    """Ring-back tones of other standards (UK double ring, 425 Hz long ring, modulated)."""
    return _cadence(rng, n, _RING)


def busy(rng: np.random.Generator, n: int) -> np.ndarray:
    """Busy / congestion tones of other standards."""
    return _cadence(rng, n, _BUSY)


def fan(rng: np.random.Generator, n: int) -> np.ndarray:
    """A hair dryer or engine: band-passed noise with a motor's harmonic whine."""
    lo = rng.uniform(100, 800)
    bp = signal.butter(2, [lo, lo * rng.uniform(2, 8)], "bandpass", fs=SR, output="sos")
    y = unit(signal.sosfilt(bp, rng.standard_normal(n)))
    whine = rng.uniform(100, 1200)
    return y + rng.uniform(0.1, 0.6) * sum(np.sin(2 * np.pi * whine * k * times(n)) / k for k in (1, 2, 3))


def line(rng: np.random.Generator, n: int) -> np.ndarray:
    """A noisy analogue line: brown rumble, band-passed hiss, crosstalk-like tones, dropouts."""
    bp = signal.butter(2, [300, 3400], "bandpass", fs=SR, output="sos")
    y = unit(signal.sosfilt(bp, rng.standard_normal(n))) + 0.5 * brown(rng, n)
    y = y + 0.2 * np.sin(2 * np.pi * rng.uniform(500, 3000) * times(n))
    drop = np.ones(n)
    for a in rng.integers(0, n, int(rng.integers(0, 6))):
        drop[a : a + int(rng.uniform(0.02, 0.3) * SR)] = 0.05
    return y * drop


def hiss(rng: np.random.Generator, n: int) -> np.ndarray:
    """A quiet line: band-limited hiss (its level is set low by the stream builder)."""
    lp = signal.butter(4, rng.uniform(3000, 7500), "lowpass", fs=SR, output="sos")
    return unit(signal.sosfilt(lp, rng.standard_normal(n)))


def medley(rng: np.random.Generator, n: int) -> np.ndarray:
    """The other kinds here one after another (1-6 s each, at their own levels)."""
    return sequence(NONSPEECH_OTHER, rng, n, (1, 6), -15)


NONSPEECH_OTHER: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    f.__name__: f for f in (tone, chirp, dtmf, beeps, white, pink, brown, hum, clicks, notes, chords,
                            drums, bursts, ringback, busy, fan, line, hiss, medley)
}
