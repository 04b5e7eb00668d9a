"""The wire protocol: client messages, JSON text frames, validation, query parameters.

Pure: no asyncio, no sockets. The server and the clients move the strings this module makes.
The server's messages (hello, window, segment, alert, end, error) are described once, as typed
events with their required keys, in :mod:`streamer.events` (``events.encode``, ``events.from_wire``).

Client messages on ``/ingest``::

    start    {"type":"start","sample_rate":8000,"channels":1,"encoding":"pcm_s16le"}
    (binary audio frames)
    stop     {"type":"stop"}

Hostile input is refused with a :class:`ProtocolError` whose message is short and safe to send
back: JSON nested deeper than :data:`MAX_DEPTH`, NaN/Infinity (not JSON), numbers out of range,
client values quoted by a short prefix only (:func:`quote`). :func:`close_reason` fits a close
frame's reason into its 123-byte limit; :func:`check_stream_id` and :func:`parse_since` validate
the query parameters of ``/ingest`` and ``/ws``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Union

from streamer.errors import ProtocolError

__all__ = [
    "CLIENT_TYPES",
    "ENCODINGS",
    "MAX_TEXT_BYTES",
    "Start",
    "Stop",
    "ClientMessage",
    "encode",
    "decode",
    "parse_client",
    "MAX_DEPTH",
    "MAX_CLOSE_REASON",
    "STREAM_ID_PATTERN",
    "quote",
    "close_reason",
    "json_depth",
    "check_stream_id",
    "parse_since",
]

CLIENT_TYPES = ("start", "stop")
ENCODINGS = ("pcm_s16le", "mulaw", "alaw", "f32le")
MAX_TEXT_BYTES = 64 * 1024
MIN_RATE, MAX_RATE = 4000, 192000
MAX_CHANNELS = 8
MAX_DEPTH = 32            # nesting of a client message (start/stop need 1)
MAX_CLOSE_REASON = 123    # bytes of UTF-8 a close frame's reason may hold (RFC 6455 5.5)
QUOTE_CHARS = 40          # how much of a client's value an error message repeats
STREAM_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}"
_STREAM_ID = re.compile(STREAM_ID_PATTERN)
_JSON_SYNTAX = re.compile(r'["\\\[\]{}]')  # the characters that decide string and nesting state


@dataclass(frozen=True)
class Start:
    """An ingest stream's opening message."""

    sample_rate: int
    channels: int
    encoding: str

    def to_dict(self) -> dict[str, Any]:
        """The message as a JSON-ready dict."""
        return {"type": "start", "sample_rate": self.sample_rate, "channels": self.channels,
                "encoding": self.encoding}


@dataclass(frozen=True)
class Stop:
    """An ingest stream's closing message."""

    def to_dict(self) -> dict[str, Any]:
        """The message as a JSON-ready dict."""
        return {"type": "stop"}


ClientMessage = Union[Start, Stop]


def _finite(value: Any) -> Any:
    """Replace NaN/inf floats (not valid JSON) by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and hasattr(value, "dtype"):  # a numpy scalar
        return _finite(value.item())
    return value


def encode(msg: dict[str, Any]) -> str:
    """One message as a compact JSON text frame.

    Raises:
        ProtocolError: the message has no string ``type`` or cannot be serialised.
    """
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError("a message must be a JSON object with a string 'type'")
    try:
        return json.dumps(msg, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        try:
            return json.dumps(_finite(msg), separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"message cannot be encoded as JSON: {exc}") from None


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """``repr`` of a client's value, cut to about ``limit`` characters (an error never echoes 5,000)."""
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def close_reason(text: str, limit: int = MAX_CLOSE_REASON) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8, on a character boundary (an ellipsis marks a cut).

    A close frame is a control frame: its payload (2 bytes of code plus the reason) may not exceed
    125 bytes, so cutting by characters is not enough once the text is not ASCII.
    """
    raw = str(text).encode("utf-8", "replace")
    if len(raw) <= limit:
        return raw.decode("utf-8")
    return raw[: max(0, limit - 3)].decode("utf-8", "ignore") + "\u2026"


def json_depth(text: str, stop_above: int | None = None) -> int:
    """The deepest nesting of arrays and objects in JSON text, strings skipped (no parsing, no recursion).

    Linear in the number of quotes, backslashes and brackets. With ``stop_above``, returns as soon as
    the depth passes it.
    """
    depth = best = 0
    in_string = False
    skip_to = -1  # an escaped character inside a string
    for m in _JSON_SYNTAX.finditer(text):
        pos = m.start()
        if pos <= skip_to:
            continue
        ch = m.group()
        if in_string:
            if ch == "\\":
                skip_to = pos + 1
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > best:
                best = depth
                if stop_above is not None and best > stop_above:
                    return best
        elif ch in "]}":
            depth -= 1
    return best


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def check_stream_id(text: Any) -> str:
    """A valid stream id (the whole text, no trailing newline), or a ProtocolError."""
    if not isinstance(text, str) or not _STREAM_ID.fullmatch(text):
        raise ProtocolError("stream IDs are 1 to 64 letters, digits, _ . : @ - (starting with a letter "
                            f"or digit), got {quote(text)}")
    return text


def parse_since(text: Any) -> int:
    """The ``since`` query parameter: a sequence number >= 0 (digits only, at most 18 of them)."""
    if not isinstance(text, str) or not text.isascii() or not text.isdigit() or len(text) > 18:
        raise ProtocolError(f"since must be an integer, 0 or more, got {quote(text)}")
    return int(text)


def decode(frame: str | bytes, max_bytes: int = MAX_TEXT_BYTES, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Parse one JSON text frame into a message dict with a string ``type``.

    Raises:
        ProtocolError: binary frame, too large, nested too deep, not JSON (NaN and Infinity
            included), not an object, or no ``type``.
    """
    if isinstance(frame, (bytes, bytearray, memoryview)):
        raise ProtocolError("expected a JSON text message, got a binary frame")
    if not isinstance(frame, str):
        raise ProtocolError(f"expected a JSON text message, got {type(frame).__name__}")
    if len(frame) > max_bytes or len(frame.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ProtocolError(f"message too large (limit {max_bytes} bytes)")
    # the count bounds the depth: the scan runs only for a frame with many brackets
    if frame.count("[") + frame.count("{") > max_depth and json_depth(frame, stop_above=max_depth) > max_depth:
        raise ProtocolError(f"message nested too deep (limit {max_depth} levels)")
    try:
        msg = json.loads(frame, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # RecursionError: a guard behind the depth check
        raise ProtocolError("message is not valid JSON") from None
    if not isinstance(msg, dict):
        raise ProtocolError("message must be a JSON object")
    if not isinstance(msg.get("type"), str):
        raise ProtocolError("message has no string 'type'")
    return msg


def _int_field(msg: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = msg.get(key)
    # 1e400 parses as inf and int(inf) raises OverflowError: finite floats only
    if (isinstance(v, bool) or not isinstance(v, (int, float))
            or (isinstance(v, float) and (not math.isfinite(v) or not v.is_integer()))):
        raise ProtocolError(f"'{key}' must be an integer, got {quote(v)}")
    if not lo <= v <= hi:
        raise ProtocolError(f"'{key}' must be between {lo} and {hi}, got {quote(v)}")
    return int(v)


def parse_client(frame: str | bytes, max_bytes: int = MAX_TEXT_BYTES) -> ClientMessage:
    """Parse and validate one client text message (``start`` or ``stop``).

    Raises:
        ProtocolError: anything but a well-formed ``start`` or ``stop``.
    """
    msg = decode(frame, max_bytes)
    kind = msg["type"]
    if kind == "stop":
        return Stop()
    if kind != "start":
        raise ProtocolError(f"unknown message type {quote(kind)} (expected 'start' or 'stop')")
    rate = _int_field(msg, "sample_rate", MIN_RATE, MAX_RATE)
    channels = _int_field(msg, "channels", 1, MAX_CHANNELS) if "channels" in msg else 1
    encoding = msg.get("encoding", "pcm_s16le")
    if not isinstance(encoding, str) or encoding not in ENCODINGS:
        raise ProtocolError(f"unknown encoding {quote(encoding)} (expected one of {', '.join(ENCODINGS)})")
    return Start(sample_rate=rate, channels=channels, encoding=encoding)
