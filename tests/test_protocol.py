"""The pure wire protocol: encoding, decoding and validation of messages."""

import json
import math

import numpy as np
import pytest

from streamer import protocol
from streamer.errors import ProtocolError


def test_encode_compact_and_decode_round_trip():
    msg = {"type": "window", "seq": 3, "start": 0.0, "end": 3.0, "channel": 0, "speech": True,
           "label": "happy", "confidence": 0.8, "probs": {"happy": 0.8, "sad": 0.2}}
    text = protocol.encode(msg)
    assert " " not in text
    assert protocol.decode(text) == msg
    assert protocol.validate_server(protocol.decode(text)) == msg


def test_encode_non_finite_and_numpy_values():
    text = protocol.encode({"type": "window", "confidence": float("nan"), "x": np.float32(0.5),
                            "probs": {"a": math.inf}})
    assert json.loads(text) == {"type": "window", "confidence": None, "x": 0.5, "probs": {"a": None}}


def test_to_wire_strips_private_keys_and_sets_seq():
    ev = {"type": "window", "start": 0, "raw": {"a": 1}, "probs": {"a": 1}}
    out = protocol.to_wire(ev, 7)
    assert out == {"type": "window", "start": 0, "probs": {"a": 1}, "seq": 7}
    assert "raw" in ev  # the event itself is untouched


@pytest.mark.parametrize("frame,match", [
    (b'{"type":"stop"}', "binary"),
    ("not json", "valid JSON"),
    ("[1,2]", "object"),
    ('{"kind":"start"}', "type"),
    ('{"type":5}', "type"),
    ("x" * (protocol.MAX_TEXT_BYTES + 1), "too large"),
])
def test_decode_rejects(frame, match):
    with pytest.raises(ProtocolError, match=match):
        protocol.decode(frame)


def test_parse_start_and_stop():
    s = protocol.parse_client('{"type":"start","sample_rate":8000,"channels":2,"encoding":"mulaw"}')
    assert s == protocol.Start(8000, 2, "mulaw")
    assert protocol.parse_client(protocol.encode(s.to_dict())) == s
    assert protocol.parse_client('{"type":"start","sample_rate":16000}') == protocol.Start(16000, 1, "pcm_s16le")
    assert isinstance(protocol.parse_client('{"type":"stop"}'), protocol.Stop)


@pytest.mark.parametrize("msg,match", [
    ({"type": "hello"}, "unknown message type"),
    ({"type": "start"}, "sample_rate"),
    ({"type": "start", "sample_rate": "8000"}, "integer"),
    ({"type": "start", "sample_rate": 8000.5}, "integer"),
    ({"type": "start", "sample_rate": True}, "integer"),
    ({"type": "start", "sample_rate": 100}, "between"),
    ({"type": "start", "sample_rate": 8000, "channels": 0}, "between"),
    ({"type": "start", "sample_rate": 8000, "channels": 99}, "between"),
    ({"type": "start", "sample_rate": 8000, "encoding": "opus"}, "encoding"),
])
def test_parse_client_rejects(msg, match):
    with pytest.raises(ProtocolError, match=match):
        protocol.parse_client(json.dumps(msg))


def test_validate_server():
    protocol.validate_server(protocol.error("boom"))
    protocol.validate_server(protocol.end(4))
    with pytest.raises(ProtocolError, match="lacks"):
        protocol.validate_server({"type": "segment", "seq": 1})
    with pytest.raises(ProtocolError, match="unknown"):
        protocol.validate_server({"type": "nope"})
