"""PCM codecs for network ingest: 16-bit PCM, G.711 mu-law and A-law, 32-bit float.

G.711 goes through 256-entry decode tables and 65536-entry encode tables built once with numpy
(the ITU-T G.711 / Sun ``g711.c`` segment rules), so no ``audioop`` (removed in Python 3.13).
Samples are float32 in [-1, 1); a 16-bit value v maps to v / 32768.
"""

from __future__ import annotations

import numpy as np

from streamer.errors import ProtocolError
from streamer.protocol import ENCODINGS  # the one definition: the ingest start message names them

__all__ = ["ENCODINGS", "bytes_per_sample", "decode_pcm", "encode_pcm",
           "ulaw_to_int16", "alaw_to_int16", "int16_to_ulaw", "int16_to_alaw"]


_WIDTH = {"pcm_s16le": 2, "mulaw": 1, "alaw": 1, "f32le": 4}


def bytes_per_sample(encoding: str) -> int:
    """Bytes per sample of one channel.

    Raises:
        ProtocolError: unknown encoding.
    """
    try:
        return _WIDTH[encoding]
    except KeyError:
        raise ProtocolError(f"unknown encoding {encoding!r} (expected one of {', '.join(ENCODINGS)})") from None


def _ulaw_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _alaw_decode_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8,
                         ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


def _segment(values: np.ndarray, ends: tuple[int, ...]) -> np.ndarray:
    """Index of the first segment end >= value (8 when above every end)."""
    return np.searchsorted(np.asarray(ends), values, side="left")


def _ulaw_encode_table() -> np.ndarray:
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    pcm = np.minimum(np.abs(pcm), 8159) + 0x21
    seg = _segment(pcm, (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF))
    uval = (np.minimum(seg, 7) << 4) | ((pcm >> (np.minimum(seg, 7) + 1)) & 0x0F)
    uval = np.where(seg >= 8, 0x7F, uval)
    return (uval ^ mask).astype(np.uint8)


def _alaw_encode_table() -> np.ndarray:
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 3
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    pcm = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = _segment(pcm, (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF))
    s = np.minimum(seg, 7)
    aval = (s << 4) | np.where(s < 2, (pcm >> 1) & 0x0F, (pcm >> s) & 0x0F)
    aval = np.where(seg >= 8, 0x7F, aval)
    return (aval ^ mask).astype(np.uint8)


_ULAW_DEC = _ulaw_decode_table()
_ALAW_DEC = _alaw_decode_table()
_ULAW_ENC = _ulaw_encode_table()
_ALAW_ENC = _alaw_encode_table()


def ulaw_to_int16(data: bytes | np.ndarray) -> np.ndarray:
    """G.711 mu-law bytes -> int16 samples."""
    return _ULAW_DEC[np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data]


def alaw_to_int16(data: bytes | np.ndarray) -> np.ndarray:
    """G.711 A-law bytes -> int16 samples."""
    return _ALAW_DEC[np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data]


def int16_to_ulaw(x: np.ndarray) -> np.ndarray:
    """int16 samples -> G.711 mu-law codes (uint8)."""
    return _ULAW_ENC[np.asarray(x, dtype=np.int32) + 32768]


def int16_to_alaw(x: np.ndarray) -> np.ndarray:
    """int16 samples -> G.711 A-law codes (uint8)."""
    return _ALAW_ENC[np.asarray(x, dtype=np.int32) + 32768]


def decode_pcm(payload: bytes, encoding: str, channels: int) -> np.ndarray:
    """Decode one binary frame of interleaved samples.

    Args:
        payload: the frame's bytes, interleaved channels.
        encoding: ``pcm_s16le``, ``mulaw``, ``alaw`` or ``f32le``.
        channels: channels interleaved in the frame.

    Returns:
        float32 array [n, channels] in [-1, 1].

    Raises:
        ProtocolError: unknown encoding, a size that is not a whole number of sample frames,
            or non-finite float samples.
    """
    width = bytes_per_sample(encoding)
    if channels < 1:
        raise ProtocolError(f"channels must be at least 1, got {channels}")
    frame = width * channels
    if len(payload) % frame:
        raise ProtocolError(f"frame of {len(payload)} bytes is not a whole number of "
                            f"{frame}-byte sample frames ({encoding}, {channels} channel(s))")
    if encoding == "pcm_s16le":
        x = np.frombuffer(payload, dtype="<i2").astype(np.float32) / 32768.0
    elif encoding == "mulaw":
        x = ulaw_to_int16(payload).astype(np.float32) / 32768.0
    elif encoding == "alaw":
        x = alaw_to_int16(payload).astype(np.float32) / 32768.0
    else:
        x = np.frombuffer(payload, dtype="<f4").astype(np.float32)
        if x.size and not np.isfinite(x).all():
            raise ProtocolError("f32le frame holds NaN or infinite samples")
        x = np.clip(x, -1.0, 1.0)
    return x.reshape(-1, channels)


def encode_pcm(x: np.ndarray, encoding: str) -> bytes:
    """Encode float samples [n] or [n, channels] (interleaved) in one of :data:`ENCODINGS`.

    Raises:
        ProtocolError: unknown encoding.
    """
    bytes_per_sample(encoding)
    a = np.asarray(x, dtype=np.float32)
    if encoding == "f32le":
        return np.clip(a, -1.0, 1.0).astype("<f4").tobytes()
    q = np.clip(np.round(a * 32768.0), -32768, 32767).astype(np.int16)
    if encoding == "pcm_s16le":
        return q.astype("<i2").tobytes()
    if encoding == "mulaw":
        return int16_to_ulaw(q).tobytes()
    return int16_to_alaw(q).tobytes()
