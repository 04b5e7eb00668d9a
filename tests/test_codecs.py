"""G.711 and PCM codecs against known values (ITU-T G.711 tables) and round trips."""

import numpy as np
import pytest

from streamer.codecs import (alaw_to_int16, decode_pcm, encode_pcm, int16_to_alaw, int16_to_ulaw,
                             ulaw_to_int16)
from streamer.errors import ProtocolError


def test_ulaw_known_values():
    # 0xFF and 0x7F are the two zeros; 0x80/0x00 are the extremes (+/-32124)
    assert ulaw_to_int16(b"\xff\x7f\x80\x00\xf0\x70").tolist() == [0, 0, 32124, -32124, 120, -120]
    assert int16_to_ulaw(np.array([0, 32767, -32768, 120, -120])).tolist() == [0xFF, 0x80, 0x00, 0xF0, 0x70]


def test_alaw_known_values():
    # 0xD5/0x55 are +/-8 (the smallest step), 0xAA/0x2A are +/-32256
    assert alaw_to_int16(b"\xd5\x55\xaa\x2a").tolist() == [8, -8, 32256, -32256]
    assert int16_to_alaw(np.array([0, -1, 32767, -32768])).tolist() == [0xD5, 0x55, 0xAA, 0x2A]


def test_g711_matches_reference_implementation_when_available():
    audioop = pytest.importorskip("audioop")  # gone in Python 3.13; the reference only
    codes = bytes(range(256))
    assert (ulaw_to_int16(codes) == np.frombuffer(audioop.ulaw2lin(codes, 2), "<i2")).all()
    assert (alaw_to_int16(codes) == np.frombuffer(audioop.alaw2lin(codes, 2), "<i2")).all()
    lin = np.arange(-32768, 32768, dtype="<i2")
    assert (int16_to_ulaw(lin) == np.frombuffer(audioop.lin2ulaw(lin.tobytes(), 2), np.uint8)).all()
    assert (int16_to_alaw(lin) == np.frombuffer(audioop.lin2alaw(lin.tobytes(), 2), np.uint8)).all()


def test_g711_code_round_trip_is_exact():
    codes = np.arange(256, dtype=np.uint8)
    # every code except mu-law's negative zero (0x7F decodes to 0, which encodes as 0xFF)
    u = int16_to_ulaw(ulaw_to_int16(codes))
    assert (u[codes != 0x7F] == codes[codes != 0x7F]).all()
    assert (int16_to_alaw(alaw_to_int16(codes)) == codes).all()


@pytest.mark.parametrize("encoding,tol", [("pcm_s16le", 1 / 32768), ("f32le", 0.0),
                                          ("mulaw", 0.04), ("alaw", 0.04)])
@pytest.mark.parametrize("channels", [1, 2])
def test_round_trip(encoding, tol, channels):
    rng = np.random.default_rng(0)
    x = (0.5 * np.sin(np.linspace(0, 60, 800 * channels))).astype(np.float32).reshape(-1, channels)
    x += rng.normal(0, 0.01, x.shape).astype(np.float32)
    y = decode_pcm(encode_pcm(x, encoding), encoding, channels)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.max(np.abs(y - x)) <= tol + 1e-7
    if encoding in ("mulaw", "alaw"):  # G.711 keeps about 38 dB SNR on speech-level signals
        snr = 10 * np.log10(np.sum(x ** 2) / np.sum((y - x) ** 2))
        assert snr > 30


def test_stereo_is_interleaved():
    payload = np.array([1, -1, 2, -2], dtype="<i2").tobytes()
    y = decode_pcm(payload, "pcm_s16le", 2)
    assert (y * 32768).tolist() == [[1, -1], [2, -2]]


@pytest.mark.parametrize("payload,encoding,channels", [
    (b"\x00\x01\x02", "pcm_s16le", 1),   # odd byte count
    (b"\x00\x01", "pcm_s16le", 2),       # half a stereo frame
    (b"\x00" * 6, "f32le", 1),           # not a multiple of 4
    (b"\x00" * 3, "mulaw", 2),
])
def test_wrong_sizes(payload, encoding, channels):
    with pytest.raises(ProtocolError, match="whole number"):
        decode_pcm(payload, encoding, channels)


def test_bad_encoding_and_nan():
    with pytest.raises(ProtocolError, match="unknown encoding"):
        decode_pcm(b"\x00\x00", "pcm_u8", 1)
    with pytest.raises(ProtocolError, match="unknown encoding"):
        encode_pcm(np.zeros(4), "opus")
    with pytest.raises(ProtocolError, match="NaN"):
        decode_pcm(np.array([0.0, np.nan], "<f4").tobytes(), "f32le", 1)


def test_clipping_and_empty():
    assert decode_pcm(b"", "mulaw", 1).shape == (0, 1)
    y = decode_pcm(encode_pcm(np.array([2.0, -2.0]), "pcm_s16le"), "pcm_s16le", 1)
    assert y[0, 0] == pytest.approx(32767 / 32768) and y[1, 0] == -1.0
