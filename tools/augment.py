"""Audio augmentation for the real world: gain, noise, reverberation, speed/pitch, telephone, codec.

Every function takes mono float32 audio and a ``numpy.random.Generator`` where it draws anything,
so a seeded generator gives the same augmented clip every time.
"""

from __future__ import annotations

import numpy as np

__all__ = ["gain", "add_noise", "room_response", "reverb", "speed", "telephone", "is_narrowband", "mulaw_encode", "mulaw_decode", "noisy", "codec",
           "equalise", "warp_formants", "babble", "CODECS", "VERSIONS", "make_version"]


def gain(y: np.ndarray, db: float) -> np.ndarray:
    """Scale by ``db`` decibels (clipped to [-1, 1])."""
    return np.clip(y * np.float32(10 ** (db / 20)), -1.0, 1.0).astype(np.float32)


def add_noise(y: np.ndarray, snr_db: float, rng: np.random.Generator, colour: str = "white") -> np.ndarray:
    """Add white (or pink) noise at ``snr_db`` relative to the clip's mean power."""
    p = float(np.mean(y.astype(np.float64) ** 2)) + 1e-12
    n = rng.standard_normal(len(y))
    if colour == "pink":
        spec = np.fft.rfft(n)
        spec /= np.sqrt(np.maximum(np.arange(len(spec)), 1))
        n = np.fft.irfft(spec, len(y))
    n *= np.sqrt(p / (np.mean(n**2) + 1e-12) / 10 ** (snr_db / 10))
    return np.clip(y + n, -1.0, 1.0).astype(np.float32)


def room_response(rng: np.random.Generator, sr: int, rt60: float) -> np.ndarray:
    """A synthetic room's impulse response: exponentially decaying noise, ``rt60`` s, unit energy."""
    n = int(sr * rt60)
    ir = rng.standard_normal(n) * np.exp(-6.9 * (np.arange(n) / sr) / rt60)
    return ir / (np.sqrt(np.sum(ir**2)) + 1e-12)


def reverb(y: np.ndarray, sr: int, rng: np.random.Generator, rt60: float | None = None, wet: float | None = None) -> np.ndarray:
    """Convolve with a synthetic room response: exponentially decaying noise (RT60 0.2-0.8 s)."""
    from scipy.signal import fftconvolve

    rt60 = float(rng.uniform(0.2, 0.8)) if rt60 is None else rt60
    wet = float(rng.uniform(0.2, 0.6)) if wet is None else wet
    wet_sig = fftconvolve(y, room_response(rng, sr, rt60))[: len(y)]
    out = (1 - wet) * y + wet * wet_sig
    peak = np.max(np.abs(out)) + 1e-9
    ref = np.max(np.abs(y)) + 1e-9
    return np.clip(out * min(1.0, ref / peak * 1.0), -1, 1).astype(np.float32)


def speed(y: np.ndarray, factor: float, sr: int = 16000) -> np.ndarray:
    """Play ``factor`` times faster (tempo and pitch together, as a tape), by resampling with soxr."""
    import soxr

    return soxr.resample(y, sr * factor, sr, quality="HQ").astype(np.float32)


def mulaw_encode(y: np.ndarray, mu: int = 255) -> np.ndarray:
    """8-bit mu-law codes (0..255) of audio in [-1, 1]."""
    y = np.clip(y, -1.0, 1.0)
    c = np.sign(y) * np.log1p(mu * np.abs(y)) / np.log1p(mu)
    return np.round((c + 1) / 2 * mu).astype(np.uint8)


def mulaw_decode(codes: np.ndarray, mu: int = 255) -> np.ndarray:
    """Audio in [-1, 1] from 8-bit mu-law codes."""
    c = codes.astype(np.float32) / mu * 2 - 1
    return (np.sign(c) * ((1 + mu) ** np.abs(c) - 1) / mu).astype(np.float32)


def telephone(y: np.ndarray, sr: int = 16000, narrow_sr: int = 8000) -> np.ndarray:
    """Telephone channel: resample to 8 kHz (soxr), 8-bit mu-law, decode, resample back to ``sr``."""
    import soxr

    lo = soxr.resample(y, sr, narrow_sr, quality="HQ")
    lo = mulaw_decode(mulaw_encode(lo))
    return soxr.resample(lo, narrow_sr, sr, quality="HQ").astype(np.float32)


def is_narrowband(version: str) -> bool:
    """Whether an augmented copy went through the 8 kHz telephone channel (``tel``, ``tel_noisy#2``, ...)."""
    return version.split("#")[0].startswith("tel")


def noisy(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gain +-6 dB, then white noise at 10-30 dB SNR."""
    return add_noise(gain(y, rng.uniform(-6, 6)), rng.uniform(10, 30), rng)


#: lossy codecs of :func:`codec`: name -> (ffmpeg encoder, container, bitrates in kb/s)
CODECS = {
    "mp3": ("libmp3lame", "mp3", (24, 32)),
    "opus": ("libopus", "ogg", (12, 16)),
}


def codec(y: np.ndarray, sr: int, name: str, kbps: int) -> np.ndarray:
    """Compressed audio: encode with ffmpeg (``name`` in :data:`CODECS`, ``kbps`` kb/s), decode back to ``sr``.

    The encoded stream goes through a temporary file (so the decoder sees the MP3 gapless header and
    the Opus pre-skip: no encoder delay), and the result is cut or zero-padded to ``len(y)`` samples.
    """
    import os
    import subprocess
    import tempfile

    from streamer.sources import ffmpeg_exe

    enc, fmt, _ = CODECS[name]
    n = len(y)
    if n == 0:
        return y.astype(np.float32)
    pcm = np.clip(y, -1.0, 1.0).astype("<f4").tobytes()
    ff = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    with tempfile.TemporaryDirectory(prefix="emostream-codec-") as tmp:
        path = os.path.join(tmp, f"clip.{fmt}")
        subprocess.run(ff + ["-f", "f32le", "-ar", str(sr), "-ac", "1", "-i", "pipe:0",
                             "-c:a", enc, "-b:a", f"{int(kbps)}k", path],
                       input=pcm, check=True, capture_output=True, timeout=120)
        out = subprocess.run(ff + ["-i", path, "-f", "f32le", "-ac", "1", "-ar", str(sr), "pipe:1"],
                             check=True, capture_output=True, timeout=120).stdout
    z = np.frombuffer(out, dtype="<f4")
    if len(z) >= n:
        z = z[:n]
    else:
        z = np.concatenate([z, np.zeros(n - len(z), np.float32)])
    return np.clip(z, -1.0, 1.0).astype(np.float32)


def equalise(y: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A random microphone/channel response: a spectral tilt of -4..+4 dB per octave around 1 kHz
    and two peaks or notches of +-8 dB (one octave wide), applied in the frequency domain."""
    n = len(y)
    if n == 0:
        return y.astype(np.float32)
    f = np.fft.rfftfreq(n, 1 / sr)
    octs = np.log2(np.maximum(f, 50.0) / 1000.0)
    db = rng.uniform(-4, 4) * octs
    for _ in range(2):
        c = np.log2(rng.uniform(200, 0.45 * sr) / 1000.0)
        db += rng.uniform(-8, 8) * np.exp(-0.5 * ((octs - c) / 0.5) ** 2)
    out = np.fft.irfft(np.fft.rfft(y) * 10 ** (db / 20), n)
    peak = float(np.max(np.abs(out))) + 1e-9
    ref = float(np.max(np.abs(y))) + 1e-9
    return np.clip(out * (ref / peak), -1, 1).astype(np.float32)


def warp_formants(y: np.ndarray, sr: int, alpha: float) -> np.ndarray:
    """Vocal-tract-length perturbation: the short-time magnitude spectrum stretched by ``alpha``
    along frequency (formants move, duration does not), resynthesised with the original phase."""
    from scipy.signal import istft, stft

    if len(y) < 512:
        return y.astype(np.float32)
    _, _, Z = stft(y, nperseg=512, noverlap=384)
    k = np.arange(Z.shape[0], dtype=np.float64)
    src = np.clip(k / alpha, 0, Z.shape[0] - 1)
    mag = np.abs(Z)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, Z.shape[0] - 1)
    w = (src - lo)[:, None]
    warped = (1 - w) * mag[lo] + w * mag[hi]
    _, out = istft(warped * np.exp(1j * np.angle(Z)), nperseg=512, noverlap=384)
    out = out[: len(y)]
    if len(out) < len(y):
        out = np.pad(out, (0, len(y) - len(out)))
    ref = float(np.max(np.abs(y))) + 1e-9
    return np.clip(out * (ref / (float(np.max(np.abs(out))) + 1e-9)), -1, 1).astype(np.float32)


def babble(y: np.ndarray, rng: np.random.Generator, snr_db: float) -> np.ndarray:
    """Babble: 4-6 time-reversed, shifted copies of the clip (speech-like, unintelligible) at ``snr_db``."""
    n = len(y)
    if n == 0:
        return y.astype(np.float32)
    b = np.zeros(n, np.float64)
    for _ in range(int(rng.integers(4, 7))):
        b += np.roll(y[::-1], int(rng.integers(0, n))) * rng.uniform(0.5, 1.0)
    p = float(np.mean(y.astype(np.float64) ** 2)) + 1e-12
    b *= np.sqrt(p / (np.mean(b**2) + 1e-12) / 10 ** (snr_db / 10))
    return np.clip(y + b, -1.0, 1.0).astype(np.float32)


#: the versions of a clip a training epoch draws from, by name
VERSIONS = ("clean", "noisy", "noisy2", "tel", "tel_noisy", "reverb", "speed", "codec", "tel_speed", "pink",
            "eq", "vtlp", "babble", "tel_eq", "tel_vtlp")


def make_version(y: np.ndarray, name: str, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One named augmented version of a clip.

    ``name#k`` is another draw of version ``name`` (its generator is seeded by the full name), so a
    training set can hold several different noisy, reverberant or sped-up copies of each clip.
    """
    name = name.split("#", 1)[0]
    if name == "clean":
        return y
    if name in ("noisy", "noisy2"):
        return noisy(y, rng)
    if name == "tel":
        return telephone(y, sr)
    if name == "tel_noisy":
        return telephone(noisy(y, rng), sr)
    if name == "reverb":
        return add_noise(reverb(gain(y, rng.uniform(-6, 6)), sr, rng), rng.uniform(20, 40), rng)
    if name == "speed":
        return speed(y, float(rng.choice([0.9, 0.95, 1.05, 1.1])), sr)
    if name == "tel_speed":  # another talker over the phone: speed/pitch, then the telephone channel
        return telephone(speed(gain(y, rng.uniform(-6, 6)), float(rng.uniform(0.88, 1.12)), sr), sr)
    if name == "pink":  # gain, then pink noise at 5-25 dB SNR (closer to room and car noise than white)
        return add_noise(gain(y, rng.uniform(-6, 6)), rng.uniform(5, 25), rng, colour="pink")
    if name == "eq":  # another microphone or channel: random tilt and peaks, random level
        return equalise(gain(y, rng.uniform(-10, 6)), sr, rng)
    if name == "vtlp":  # another vocal tract: formants moved by -12..+12 %, then a random channel
        return equalise(warp_formants(y, sr, float(rng.uniform(0.88, 1.12))), sr, rng)
    if name == "babble":  # other voices in the room at 5-20 dB SNR
        return babble(gain(y, rng.uniform(-6, 6)), rng, rng.uniform(5, 20))
    if name == "tel_eq":  # a handset's response, then the telephone channel
        return telephone(equalise(y, sr, rng), sr)
    if name == "tel_vtlp":
        return telephone(warp_formants(gain(y, rng.uniform(-6, 6)), sr, float(rng.uniform(0.88, 1.12))), sr)
    if name == "codec":  # a random lossy codec and bitrate: MP3 24/32 kb/s or Opus 12/16 kb/s
        cname = str(rng.choice(sorted(CODECS)))
        return codec(y, sr, cname, int(rng.choice(CODECS[cname][2])))
    raise ValueError(f"unknown version {name!r}")
