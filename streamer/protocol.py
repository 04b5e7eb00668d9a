"""The wire protocol: message types, JSON text frames, validation of client messages.

Pure: no asyncio, no sockets. The server and the clients move the strings this module makes.

Server messages (JSON text frames, each with a ``type``)::

    hello    {"type":"hello","labels":[...],"sample_rate":..,"window":s,"hop":s,"source":...}
    window   {"type":"window","seq":n,"start":s,"end":s,"channel":c,"speech":bool,"label":l,
              "confidence":p,"probs":{...}}
    segment  {"type":"segment","seq":n,"start":s,"end":s,"channel":c,"label":l,"confidence":p}
    alert    {"type":"alert","seq":n,"start":s,"channel":c,"rule":...,"label":l}
    end      {"type":"end","seq":n}
    error    {"type":"error","message":...}

Client messages on ``/ingest``::

    start    {"type":"start","sample_rate":8000,"channels":1,"encoding":"pcm_s16le"}
    (binary audio frames)
    stop     {"type":"stop"}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Union

from streamer.errors import ProtocolError

__all__ = [
    "SERVER_TYPES",
    "SEQ_TYPES",
    "CLIENT_TYPES",
    "ENCODINGS",
    "MAX_TEXT_BYTES",
    "Start",
    "Stop",
    "ClientMessage",
    "encode",
    "decode",
    "to_wire",
    "error",
    "end",
    "parse_client",
    "validate_server",
]

SERVER_TYPES = ("hello", "window", "segment", "alert", "end", "error")
SEQ_TYPES = ("window", "segment", "alert", "end")
CLIENT_TYPES = ("start", "stop")
ENCODINGS = ("pcm_s16le", "mulaw", "alaw", "f32le")
MAX_TEXT_BYTES = 64 * 1024
MIN_RATE, MAX_RATE = 4000, 192000
MAX_CHANNELS = 8

# keys kept inside the process but never put on the wire
_PRIVATE_KEYS = ("raw",)


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


def decode(frame: str | bytes, max_bytes: int = MAX_TEXT_BYTES) -> dict[str, Any]:
    """Parse one JSON text frame into a message dict with a string ``type``.

    Raises:
        ProtocolError: binary frame, too large, not JSON, not an object, or no ``type``.
    """
    if isinstance(frame, (bytes, bytearray, memoryview)):
        raise ProtocolError("expected a JSON text message, got a binary frame")
    if not isinstance(frame, str):
        raise ProtocolError(f"expected a JSON text message, got {type(frame).__name__}")
    if len(frame) > max_bytes or len(frame.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ProtocolError(f"message too large (limit {max_bytes} bytes)")
    try:
        msg = json.loads(frame)
    except ValueError:
        raise ProtocolError("message is not valid JSON") from None
    if not isinstance(msg, dict):
        raise ProtocolError("message must be a JSON object")
    if not isinstance(msg.get("type"), str):
        raise ProtocolError("message has no string 'type'")
    return msg


def to_wire(event: dict[str, Any], seq: int | None = None) -> dict[str, Any]:
    """A pipeline event as a wire message: private keys dropped, ``seq`` set when given."""
    msg = {k: v for k, v in event.items() if k not in _PRIVATE_KEYS}
    if seq is not None:
        msg["seq"] = int(seq)
    return msg


def error(message: str) -> dict[str, Any]:
    """An ``error`` message."""
    return {"type": "error", "message": str(message)}


def end(seq: int) -> dict[str, Any]:
    """An ``end`` message."""
    return {"type": "end", "seq": int(seq)}


def _int_field(msg: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = msg.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v):
        raise ProtocolError(f"'{key}' must be an integer, got {v!r}")
    v = int(v)
    if not lo <= v <= hi:
        raise ProtocolError(f"'{key}' must be between {lo} and {hi}, got {v}")
    return v


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
        raise ProtocolError(f"unknown message type {kind!r} (expected 'start' or 'stop')")
    rate = _int_field(msg, "sample_rate", MIN_RATE, MAX_RATE)
    channels = _int_field(msg, "channels", 1, MAX_CHANNELS) if "channels" in msg else 1
    encoding = msg.get("encoding", "pcm_s16le")
    if encoding not in ENCODINGS:
        raise ProtocolError(f"unknown encoding {encoding!r} (expected one of {', '.join(ENCODINGS)})")
    return Start(sample_rate=rate, channels=channels, encoding=encoding)


_REQUIRED = {
    "hello": ("labels",),
    "window": ("seq", "start", "end", "channel", "speech", "label", "confidence", "probs"),
    "segment": ("seq", "start", "end", "channel", "label", "confidence"),
    "alert": ("seq", "start", "channel", "rule", "label"),
    "end": ("seq",),
    "error": ("message",),
}


def validate_server(msg: dict[str, Any]) -> dict[str, Any]:
    """Check a server message's type and required keys (clients and tests use this).

    Raises:
        ProtocolError: unknown type or a required key missing.
    """
    kind = msg.get("type")
    if kind not in _REQUIRED:
        raise ProtocolError(f"unknown server message type {kind!r}")
    missing = [k for k in _REQUIRED[kind] if k not in msg]
    if missing:
        raise ProtocolError(f"{kind} message lacks {', '.join(missing)}")
    return msg
