"""A stream's message: its seq and event, encoded to a JSON text frame once, when first needed."""

from __future__ import annotations

import json
from typing import Any

from streamer import protocol
from streamer.events import to_wire

__all__ = ["Event", "Message", "wire", "stream_frame"]

Event = Any  # an event dict (``{"type": ..., ...}``) or a typed event of streamer.events (has ``to_wire``)


def wire(event: Event, seq: int | None = None) -> dict[str, Any]:
    """An event (dict or typed) as its wire object: private keys such as ``raw`` dropped, ``seq``
    set when given."""
    return to_wire(event, seq)


class Message:
    """One message of a stream: its ``seq`` (None for hello and error) and its event.

    The JSON text frame is made from the event on first use and kept, so a message is encoded once
    however many subscribers get it. Once delivered, the stream calls :meth:`settle`: history then
    holds the text alone (a third of the memory of an event dict). A message read back from another
    process (a Redis backend) arrives as text only.
    """

    __slots__ = ("seq", "event", "_text", "_type")

    def __init__(self, seq: int | None, event: Event | None = None, text: str | None = None):
        if event is None and text is None:
            raise ValueError("a message needs an event or its text")
        self.seq = seq
        self.event = event
        self._text = text
        self._type: str | None = None

    @property
    def text(self) -> str:
        """The JSON text frame."""
        if self._text is None:
            self._text = protocol.encode(wire(self.event, self.seq))
        return self._text

    def wire(self) -> dict[str, Any]:
        """The message as a JSON-ready dict (its text is made from it too, if not yet)."""
        if self.event is None:
            return json.loads(self.text)
        w = wire(self.event, self.seq)
        if self._text is None:  # every message is encoded once anyway (settle): do it from this dict
            self._text = protocol.encode(w)
        return w

    @property
    def type(self) -> str:
        """The message type (``hello``, ``window``, ...)."""
        if self._type is None:
            if self.event is None:
                self._type = str(json.loads(self.text).get("type"))
            else:
                self._type = str(self.event["type"] if isinstance(self.event, dict) else self.event.type)
        return self._type

    def settle(self) -> None:
        """Keep only the text (and the type): the event is let go."""
        _ = self.text, self.type
        self.event = None

    def __repr__(self) -> str:
        return f"Message(seq={self.seq}, type={self.type!r})"


def stream_frame(stream_id: str, text: str) -> str:
    """A stream's frame with ``"stream": ID`` first (the wallboard feed and the record file).

    A frame that names its stream already (a hello) is returned as it is.
    """
    if text.startswith('{"type":"hello"') or not text.startswith("{"):
        return text
    return '{"stream":' + json.dumps(stream_id, ensure_ascii=False) + "," + text[1:]


