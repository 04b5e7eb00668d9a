"""Family a's music: the many ways hold music and drum loops sound, for the speech detector's training set.

:func:`tools.speech_set.chords` and :func:`tools.speech_set.drums` draw a style per stream from here
(the first recipe of each stays one style among several). A head trained on one timbre of chord and one
drum kit called other families' chords and drums speech (model 2.1.0: 44 % and 66 % rejected): what a
voice shares with music is harmonic structure and syllable-rate onsets, so the training set has to span
how instruments differ (struck, plucked, bowed, blown, synthesised; inharmonic partials, chorus,
vibrato, tremolo, filter sweeps), how chords are played (pads, comping, strums, arpeggios, bass lines)
and how drum kits are built and played (pieces, tunings, swing, fills), each often in a room.

Every function takes ``(rng, n)`` and returns ``n`` samples at :data:`tools.speech_set.SR`, unscaled.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from tools.augment import room_response
from tools.speech_set import SR, times as _t

_SCALES = (np.array([0, 2, 4, 5, 7, 9, 11]), np.array([0, 2, 3, 5, 7, 8, 10]), np.array([0, 2, 4, 7, 9]),
           np.array([0, 2, 3, 5, 7, 9, 10]))
#: chord shapes in semitones above the root: triads, sevenths, suspended, added ninths
_SHAPES = ((0, 4, 7), (0, 3, 7), (0, 4, 7, 11), (0, 3, 7, 10), (0, 4, 7, 10), (0, 5, 7), (0, 2, 7),
           (0, 4, 7, 14), (0, 3, 7, 14), (0, 4, 9), (0, 7, 12, 16))


def _midi(m: float) -> float:
    return 440.0 * 2 ** ((m - 69) / 12)


def _timbre(rng: np.random.Generator) -> dict:
    """An instrument drawn at random: its partials, their decay, its envelope and modulation."""
    kind = str(rng.choice(["struck", "plucked", "bowed", "blown", "organ", "synth", "bell", "sine"]))
    n_part = int(rng.integers(1, 4)) if kind in ("sine", "blown") else int(rng.integers(4, 16))
    amps = rng.uniform(0.2, 1.0, n_part) * np.arange(1, n_part + 1) ** -rng.uniform(0.3, 2.5)
    if kind == "blown" or rng.random() < 0.15:
        amps[1::2] *= rng.uniform(0, 0.3)  # odd partials only: clarinet, square-like
    if kind == "organ":
        amps = np.zeros(n_part)
        drawbars = [k for k in (0, 1, 2, 3, 5, 7) if k < n_part]
        amps[drawbars] = rng.uniform(0.2, 1, len(drawbars))
    return {
        "kind": kind,
        "amps": amps,
        "stretch": rng.uniform(1e-4, 1.5e-3) if kind in ("struck", "plucked") else (rng.uniform(0.2, 1.5) if kind == "bell" else 0.0),
        "attack": {"struck": 0.003, "plucked": 0.002, "bell": 0.002}.get(kind, rng.uniform(0.01, 0.4)),
        "decay": {"struck": rng.uniform(0.4, 2.5), "plucked": rng.uniform(0.1, 0.8), "bell": rng.uniform(0.5, 3.0)}.get(kind, 0.0),
        "bright_decay": rng.uniform(1.0, 4.0),  # higher partials die this many times faster
        "detune": rng.uniform(0.002, 0.012) if rng.random() < 0.4 else 0.0,  # a chorus: beating copies
        "vibrato": (rng.uniform(0.002, 0.012), rng.uniform(4, 7)) if kind in ("bowed", "blown", "synth") and rng.random() < 0.6 else (0.0, 0.0),
        "tremolo": (rng.uniform(0.1, 0.5), rng.uniform(2, 8)) if rng.random() < 0.2 else (0.0, 0.0),
        "cutoff": rng.uniform(600, 6000) if kind == "synth" else None,
    }


def _note(f: float, m: int, tb: dict, rng: np.random.Generator) -> np.ndarray:
    """One note of ``m`` samples at ``f`` Hz played on timbre ``tb``."""
    t = _t(m)
    depth, rate = tb["vibrato"]
    fm = 1 + depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 6.3)) if depth else 1.0
    y = np.zeros(m)
    for k, a in enumerate(tb["amps"], start=1):
        if tb["kind"] == "bell":
            fk = f * (1 + tb["stretch"] * (k - 1) ** 1.4 + (k - 1))
        else:
            fk = f * k * np.sqrt(1 + tb["stretch"] * k * k)
        if fk > SR / 2 - 300:
            break
        if tb["cutoff"] is not None:
            a = a / np.sqrt(1 + (fk / tb["cutoff"]) ** 4)
        copies = (1.0, 1 + tb["detune"]) if tb["detune"] else (1.0,)
        for c in copies:
            part = a * np.sin(2 * np.pi * np.cumsum(np.broadcast_to(fk * c * fm, (m,))) / SR + rng.uniform(0, 6.3))
            if tb["decay"]:
                part *= np.exp(-t * (1 + (k - 1) * (tb["bright_decay"] - 1) / 8) / tb["decay"])
            y += part
    env = np.minimum(1.0, t / tb["attack"]) * np.clip((m - np.arange(m)) / (0.02 * SR), 0, 1)
    d, r = tb["tremolo"]
    if d:
        env = env * (1 - d * (0.5 + 0.5 * np.sin(2 * np.pi * r * t)))
    return y * env


def room(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``y`` in a room: an exponentially decaying noise response (RT60 0.2-1.5 s), partly wet."""
    from scipy.signal import fftconvolve

    wet = fftconvolve(y, room_response(rng, SR, rng.uniform(0.2, 1.5)))[: len(y)]
    mix = rng.uniform(0.15, 0.6)
    return (1 - mix) * y + mix * wet * np.std(y) / (np.std(wet) + 1e-12)


def _progression(rng: np.random.Generator, count: int) -> list[tuple[float, tuple[int, ...]]]:
    """``count`` chords: (root MIDI note, shape), roots on a scale around C3-C4."""
    scale = _SCALES[int(rng.integers(len(_SCALES)))]
    key = int(rng.integers(45, 58))
    out = []
    for _ in range(count):
        root = key + int(scale[int(rng.integers(len(scale)))])
        out.append((root, _SHAPES[int(rng.integers(len(_SHAPES)))]))
    return out


def band(rng: np.random.Generator, n: int) -> np.ndarray:
    """Hold music: a chord progression played as pads, comping, strums or arpeggios, often with a bass
    line, a melody and a drum kit, often in a room."""
    tempo = rng.uniform(60, 150)
    beat = int(60 / tempo * SR)
    bar = 4 * beat
    style = str(rng.choice(["pad", "comp", "strum", "arpeggio"]))
    tb = _timbre(rng)
    y = np.zeros(n)
    chords = _progression(rng, n // bar + 2)
    per_chord = int(rng.choice([1, 2])) * bar
    for ci, (root, shape) in enumerate(chords):
        a = ci * per_chord
        if a >= n:
            break
        m = min(per_chord, n - a)
        voicing = [root + s + 12 * int(rng.integers(0, 2)) * (i > 0) for i, s in enumerate(shape)]
        if style == "pad":
            for v in voicing:
                y[a : a + m] += _note(_midi(v), m, tb, rng)
        elif style in ("comp", "strum"):
            step = beat * int(rng.choice([1, 2])) if style == "comp" else beat // int(rng.choice([1, 2]))
            for s in range(0, m, max(step, 1)):
                for i, v in enumerate(voicing):
                    o = s + (int(i * rng.uniform(0.008, 0.04) * SR) if style == "strum" else 0)
                    k = min(m - o, int(step * rng.uniform(1, 2.5)))  # rings into the next stroke
                    if k > 0:
                        y[a + o : a + o + k] += _note(_midi(v), k, tb, rng) * rng.uniform(0.6, 1.0)
        else:
            rate = beat // int(rng.choice([2, 3, 4]))
            for i, s in enumerate(range(0, m, max(rate, 1))):
                v = voicing[i % len(voicing)] + 12 * ((i // len(voicing)) % 2)
                k = min(int(rate * rng.uniform(1, 3)), m - s)
                y[a + s : a + s + k] += _note(_midi(v), k, tb, rng)
    y /= np.std(y) + 1e-12
    if rng.random() < 0.6:  # a bass line on the roots
        bass_tb = _timbre(rng)
        bass = np.zeros(n)
        for ci, (root, _) in enumerate(chords):
            for s in range(0, per_chord, beat * int(rng.choice([1, 2]))):
                a = ci * per_chord + s
                if a >= n:
                    break
                k = min(beat * 2, n - a)
                bass[a : a + k] += _note(_midi(root - 12 - 12 * int(rng.integers(0, 2))), k, bass_tb, rng)
        y += rng.uniform(0.3, 0.9) * bass / (np.std(bass) + 1e-12)
    if rng.random() < 0.5:  # a melody on top
        mel_tb = _timbre(rng)
        mel = np.zeros(n)
        scale = _SCALES[int(rng.integers(len(_SCALES)))]
        a = 0
        while a < n:
            k = min(int(beat * rng.choice([0.5, 1, 1, 2, 3])), n - a)
            if rng.random() < 0.85:
                v = chords[0][0] + 12 + int(scale[int(rng.integers(len(scale)))]) + 12 * int(rng.integers(0, 2))
                mel[a : a + k] += _note(_midi(v), k, mel_tb, rng)
            a += k
        y += rng.uniform(0.4, 1.0) * mel / (np.std(mel) + 1e-12)
    if rng.random() < 0.4:
        d = kit(rng, n, tempo)
        y += rng.uniform(0.2, 0.8) * d / (np.std(d) + 1e-12)
    return room(y, rng) if rng.random() < 0.6 else y


# ---------------------------------------------------------------- drums

def _noise_hit(rng: np.random.Generator, m: int, lo: float, hi: float, tau: float) -> np.ndarray:
    from scipy.signal import butter, sosfilt

    hi = min(hi, SR / 2 - 100)
    sos = butter(2, [lo, max(hi, lo + 100)], "bandpass", fs=SR, output="sos")
    return sosfilt(sos, rng.standard_normal(m)) * np.exp(-_t(m) / tau)


def _metal(rng: np.random.Generator, m: int, tau: float, base: float) -> np.ndarray:
    """Cymbal-like: square waves at inharmonic ratios, high-passed, decaying."""
    from scipy.signal import butter, sosfilt

    t = _t(m)
    y = sum(np.sign(np.sin(2 * np.pi * base * r * t + rng.uniform(0, 6.3))) for r in (1, 1.34, 1.79, 2.31, 2.72, 3.45))
    y = sosfilt(butter(4, rng.uniform(4000, 7000), "highpass", fs=SR, output="sos"), y)
    return y * np.exp(-t / tau)


def _kit(rng: np.random.Generator) -> dict[str, Callable[[int], np.ndarray]]:
    """A drum kit drawn at random: each piece a function of its length in samples."""
    kick_f, kick_sweep, kick_tau = rng.uniform(40, 90), rng.uniform(30, 250), rng.uniform(0.01, 0.08)
    kick_decay = rng.uniform(0.06, 0.4)
    snare_f, snare_tone, snare_lo, snare_hi = rng.uniform(140, 330), rng.uniform(0, 1), rng.uniform(500, 2500), rng.uniform(3000, 9000)
    snare_tau = rng.uniform(0.03, 0.2)
    toms = np.sort(rng.uniform(70, 320, 3))
    hat_tau, open_tau, ride_tau = rng.uniform(0.01, 0.05), rng.uniform(0.1, 0.5), rng.uniform(0.4, 2.0)
    metal_base = rng.uniform(200, 600)
    block_f = rng.uniform(400, 2000)

    def kick(m: int) -> np.ndarray:
        t = _t(m)
        f = kick_f + kick_sweep * np.exp(-t / kick_tau)
        return np.sin(2 * np.pi * np.cumsum(f) / SR) * np.exp(-t / kick_decay) + \
            0.2 * _noise_hit(rng, m, 1000, 5000, 0.004)

    def snare(m: int) -> np.ndarray:
        t = _t(m)
        tone = np.sin(2 * np.pi * snare_f * t) * np.exp(-t / 0.04)
        return snare_tone * tone + _noise_hit(rng, m, snare_lo, snare_hi, snare_tau) * 3

    def clap(m: int) -> np.ndarray:
        y = np.zeros(m)
        for k in range(int(rng.integers(2, 5))):
            o = int(k * rng.uniform(0.006, 0.014) * SR)
            if o < m:
                y[o:] += _noise_hit(rng, m - o, 800, 3000, 0.01 if k < 2 else 0.08)
        return y * 3

    def tom(m: int) -> np.ndarray:
        t = _t(m)
        f = rng.choice(toms) * (1 + 0.3 * np.exp(-t / 0.03))
        return np.sin(2 * np.pi * np.cumsum(f) / SR) * np.exp(-t / rng.uniform(0.1, 0.4))

    return {
        "kick": kick, "snare": snare, "clap": clap, "tom": tom,
        "hat": lambda m: _metal(rng, m, hat_tau, metal_base) if rng.random() < 0.5 else _noise_hit(rng, m, 6000, 7900, hat_tau) * 3,
        "open": lambda m: _metal(rng, m, open_tau, metal_base),
        "ride": lambda m: _metal(rng, m, ride_tau, metal_base * 1.3),
        "shaker": lambda m: _noise_hit(rng, m, 4000, 7900, 0.03) * 3 * np.minimum(1, _t(m) / 0.02),
        "block": lambda m: np.sin(2 * np.pi * block_f * _t(m)) * np.exp(-_t(m) / 0.03),
    }


def kit(rng: np.random.Generator, n: int, tempo: float | None = None) -> np.ndarray:
    """A drum kit playing a random 16-step pattern (swing, loose timing, accents, fills)."""
    pieces = _kit(rng)
    tempo = rng.uniform(60, 180) if tempo is None else tempo
    step = 60 / tempo / 4 * SR
    swing = rng.uniform(0, 0.33) if rng.random() < 0.4 else 0.0
    loose = rng.uniform(0, 0.015) * SR
    # a pattern: per piece, per step, the chance it plays
    use = [p for p in pieces if rng.random() < {"kick": 0.9, "snare": 0.7, "hat": 0.8}.get(p, 0.3)] or ["kick"]
    pattern = {}
    for p in use:
        prob = np.zeros(16)
        if p == "kick":
            prob[[0, 8]] = 1.0
            prob[rng.choice(16, int(rng.integers(0, 4)))] = rng.uniform(0.3, 1.0)
        elif p in ("snare", "clap"):
            prob[[4, 12]] = 1.0
            prob[rng.choice(16, int(rng.integers(0, 3)))] = rng.uniform(0.1, 0.5)
        elif p in ("hat", "shaker", "ride"):
            prob[:: int(rng.choice([1, 2, 4]))] = rng.uniform(0.7, 1.0)
        else:
            prob[rng.choice(16, int(rng.integers(1, 5)))] = rng.uniform(0.3, 1.0)
        pattern[p] = prob
    length = {"kick": 0.5, "snare": 0.4, "clap": 0.3, "tom": 0.6, "hat": 0.15, "open": 0.6, "ride": 1.5,
              "shaker": 0.12, "block": 0.1}
    gain = {p: rng.uniform(0.3, 1.0) for p in use}
    gain["kick"] = 1.0
    y = np.zeros(n)
    total = int(n / step) + 1
    for s in range(total):
        fill = (s // 16) % 4 == 3 and s % 16 >= 12 and rng.random() < 0.5
        at = s * step + (swing * step if s % 2 else 0) + rng.normal(0, loose + 1e-9)
        a = int(max(at, 0))
        if a >= n:
            break
        for p in (["tom"] if fill else use):
            if fill or rng.random() < pattern[p][s % 16]:
                m = min(int(length[p] * SR), n - a)
                y[a : a + m] += gain.get(p, 0.8) * rng.uniform(0.6, 1.0) * pieces[p](m)
    return y


def loop(rng: np.random.Generator, n: int) -> np.ndarray:
    """A drum loop, sometimes with a bass line, often in a room."""
    tempo = rng.uniform(60, 180)
    y = kit(rng, n, tempo)
    if rng.random() < 0.3:
        tb = _timbre(rng)
        beat = int(60 / tempo * SR)
        bass = np.zeros(n)
        roots = _progression(rng, n // beat + 1)
        for i, a in enumerate(range(0, n, beat)):
            k = min(beat, n - a)
            bass[a : a + k] += _note(_midi(roots[i // 4][0] - 24), k, tb, rng)
        y = y / (np.std(y) + 1e-12) + rng.uniform(0.2, 0.7) * bass / (np.std(bass) + 1e-12)
    return room(y, rng) if rng.random() < 0.5 else y
