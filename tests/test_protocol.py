"""The pure wire protocol: encoding, decoding and validation of messages."""

import json
import math

import numpy as np
import pytest

from streamer import events, protocol
from streamer.errors import ProtocolError


def test_encode_compact_and_decode_round_trip():
    msg = {"type": "window", "seq": 3, "start": 0.0, "end": 3.0, "channel": 0, "speech": True,
           "label": "happy", "confidence": 0.8, "probs": {"happy": 0.8, "sad": 0.2}}
    text = protocol.encode(msg)
    assert " " not in text
    assert protocol.decode(text) == msg
    assert events.to_wire(events.from_wire(protocol.decode(text)), 3) == {**msg, "channel_name": None}


def test_encode_non_finite_and_numpy_values():
    text = protocol.encode({"type": "window", "confidence": float("nan"), "x": np.float32(0.5),
                            "probs": {"a": math.inf}})
    assert json.loads(text) == {"type": "window", "confidence": None, "x": 0.5, "probs": {"a": None}}


def test_to_wire_strips_private_keys_and_sets_seq():
    ev = {"type": "window", "start": 0, "raw": {"a": 1}, "probs": {"a": 1}}
    out = events.to_wire(ev, 7)
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


def test_server_messages_are_validated_by_events():
    """The server's messages are described once, in streamer.events."""
    events.from_wire(events.to_wire(events.Error("boom")))
    events.from_wire({"type": "end", "seq": 4})
    with pytest.raises(ProtocolError, match="lacks"):
        events.from_wire({"type": "segment", "seq": 1})
    with pytest.raises(ProtocolError, match="unknown"):
        events.from_wire({"type": "nope"})
    assert not hasattr(protocol, "validate_server")


# -- hostile messages (issue 16) -----------------------------------------------------------------

@pytest.mark.parametrize("frame", [
    '{"type":"start","sample_rate":NaN}',
    '{"type":"start","sample_rate":Infinity}',
    '{"type":"start","sample_rate":-Infinity}',
    '{"type":"start","sample_rate":1e400}',
    '{"type":"start","sample_rate":8000,"channels":NaN}',
    '{"type":"start","sample_rate":8000,"channels":1e400}',
    '{"type":"start","sample_rate":8000,"channels":-1e400}',
    '{"type":"start","sample_rate":' + "9" * 5000 + "}",
    '{"type":"start","sample_rate":8000.0000001}',
    '{"type":"start","sample_rate":8000,"encoding":["pcm_s16le"]}',
    '{"type":"start","sample_rate":8000,"encoding":{"a":1}}',
])
def test_non_finite_and_absurd_numbers_are_protocol_errors(frame):
    with pytest.raises(ProtocolError):
        protocol.parse_client(frame)


def test_integral_floats_are_still_accepted():
    assert protocol.parse_client('{"type":"start","sample_rate":8000.0,"channels":2.0}') == protocol.Start(8000, 2, "pcm_s16le")


@pytest.mark.parametrize("depth", [33, 1000, 30_000])
def test_deep_nesting_is_refused_without_recursion(depth):
    for frame in ("[" * depth + "]" * depth,
                  '{"type":"start","x":' + "[" * depth + "]" * depth + "}",
                  '{"type":"start","x":' + '{"a":' * depth + "1" + "}" * depth + "}"):
        with pytest.raises(ProtocolError, match="nested too deep"):
            protocol.decode(frame, max_bytes=1 << 20)
        with pytest.raises(ProtocolError, match="nested too deep|too large"):
            protocol.parse_client(frame)


def test_json_depth_skips_strings_and_escapes():
    assert protocol.json_depth('{"a": "[[[[\\"{{{", "b": [[1]]}') == 3
    assert protocol.json_depth('"\\\\"' + "[]") == 1
    frame = '{"type":"stop","note":"' + "[" * 1000 + '"}'
    assert isinstance(protocol.parse_client(frame), protocol.Stop)  # brackets in a string are text


def test_error_messages_quote_a_short_prefix():
    long = "y" * 5000
    for frame in (json.dumps({"type": long}), json.dumps({"type": "start", "sample_rate": long}),
                  json.dumps({"type": "start", "sample_rate": 8000, "encoding": long})):
        with pytest.raises(ProtocolError) as info:
            protocol.parse_client(frame)
        assert len(str(info.value)) < 200 and "5000 characters" in str(info.value)
    with pytest.raises(ProtocolError) as info:
        protocol.parse_since(long)
    assert len(str(info.value)) < 200


@pytest.mark.parametrize("text", ["é" * 200, "\U0001F621" * 100, "a" * 122 + "é", "x" * 500, "ok", ""])
def test_close_reason_fits_in_a_control_frame(text):
    out = protocol.close_reason(text)
    raw = out.encode("utf-8")
    assert len(raw) <= protocol.MAX_CLOSE_REASON
    if len(text.encode()) <= protocol.MAX_CLOSE_REASON:
        assert out == text
    else:
        assert out.endswith("\u2026") and text.startswith(out[:-1])


def test_close_reason_with_lone_surrogates():
    assert len(protocol.close_reason("\udcff" * 100).encode("utf-8")) <= 123


@pytest.mark.parametrize("sid,ok", [("abc", True), ("a" * 64, True), ("a" * 65, False), ("abc\n", False),
                                    ("abc%0A", False), ("-abc", False), ("", False), ("ab c", False),
                                    ("call:42@node_1.x-y", True), ("\u0661\u0662", False), (None, False)])
def test_stream_id_is_matched_whole(sid, ok):
    if ok:
        assert protocol.check_stream_id(sid) == sid
    else:
        with pytest.raises(ProtocolError):
            protocol.check_stream_id(sid)


@pytest.mark.parametrize("text,ok", [("0", 0), ("42", 42), ("-1", None), ("1.5", None), ("", None),
                                     ("\u0661", None), ("9" * 19, None), (" 1", None), ("1\n", None)])
def test_parse_since(text, ok):
    if ok is not None:
        assert protocol.parse_since(text) == ok
    else:
        with pytest.raises(ProtocolError):
            protocol.parse_since(text)
