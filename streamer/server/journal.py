"""The ``--record`` journal: every stream's messages as JSON lines, read back after a restart.

Each line is one message frame with the stream's id first (``{"stream":ID,...}``; a ``hello``
names its stream and its ``started`` time itself). A run of a stream starts at its hello and holds
the numbered messages after it.

* :func:`repair_tail`: a power cut can leave a partial last line; it is cut off before new lines
  are appended, so the next hello does not glue onto it.
* :func:`load`: the latest run of every stream, for the hub to serve again (``?since=`` works
  across a restart); what is loaded is bounded in bytes, the most recently active runs kept.
* :func:`read_range`: messages of one run that history no longer holds in memory, read back from
  the file (served to a subscriber whose ``since`` is older than memory).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Iterator

__all__ = ["Run", "repair_tail", "load", "read_range", "strip_stream"]

_HELLO = '{"type":"hello"'
_TAIL_BLOCK = 1 << 16


@dataclass
class Run:
    """One run of a stream read from the journal: its hello and its numbered messages (text, in order)."""

    stream_id: str
    hello: dict
    messages: list[tuple[int, str]] = field(default_factory=list)
    ended: bool = False
    bytes: int = 0


def repair_tail(path: str | os.PathLike[str]) -> int:
    """Cut a partial last line off the journal (a crash mid-write); returns the bytes removed."""
    try:
        fh = open(path, "rb+")
    except FileNotFoundError:
        return 0
    with fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return 0
        end = size
        while end > 0:  # back to the last newline, a block at a time
            start = max(0, end - _TAIL_BLOCK)
            fh.seek(start)
            i = fh.read(end - start).rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            end = start
        else:
            keep = 0
        fh.truncate(keep)
        return size - keep


def strip_stream(text: str, stream_id: str) -> str:
    """A journal line as its stream sent it: the ``"stream"`` field the journal added, removed."""
    prefix = '{"stream":' + json.dumps(stream_id, ensure_ascii=False) + ","
    return "{" + text[len(prefix):] if text.startswith(prefix) else text


def _lines(path: str | os.PathLike[str]) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.endswith("\n"):  # a partial last line is not a message
                yield line[:-1]


def _parse(line: str) -> tuple[str, dict] | None:
    """(stream id, message) of one line, or None for a line that is not a journal message."""
    try:
        msg = json.loads(line)
    except ValueError:
        return None
    if not isinstance(msg, dict) or not isinstance(msg.get("stream"), str) or not isinstance(msg.get("type"), str):
        return None
    return msg["stream"], msg


def load(path: str | os.PathLike[str], max_bytes: int = 96 << 20, per_stream: int = 100_000) -> list[Run]:
    """The latest run of every stream in the journal, oldest-active first.

    Args:
        path: the journal.
        max_bytes: text kept in all; past it the runs that were active least recently go first.
        per_stream: messages kept per run (its newest).
    """
    runs: dict[str, Run] = {}
    total = 0
    if not os.path.exists(path):
        return []
    for line in _lines(path):
        parsed = _parse(line)
        if parsed is None:
            continue
        sid, msg = parsed
        if msg["type"] == "hello":
            old = runs.pop(sid, None)
            total -= old.bytes if old else 0
            runs[sid] = Run(sid, msg)
            continue
        run = runs.get(sid)
        seq = msg.get("seq")
        if run is None or not isinstance(seq, int):
            continue
        runs[sid] = runs.pop(sid)  # most recently active last
        text = strip_stream(line, sid)
        run.messages.append((seq, text))
        run.bytes += len(text)
        total += len(text)
        if len(run.messages) > per_stream:
            _, dropped = run.messages.pop(0)
            run.bytes -= len(dropped)
            total -= len(dropped)
        if msg["type"] == "end":
            run.ended = True
        while total > max_bytes and len(runs) > 1:
            oldest = next(iter(runs))
            total -= runs.pop(oldest).bytes
    return list(runs.values())


def read_range(path: str | os.PathLike[str], stream_id: str, started: float, after: int, before: int) -> list[str]:
    """Texts of the run of ``stream_id`` that started at ``started``, with ``after < seq < before``."""
    out: list[str] = []
    prefix = '{"stream":' + json.dumps(stream_id, ensure_ascii=False) + ","
    in_run = False
    for line in _lines(path):
        if line.startswith(_HELLO):
            parsed = _parse(line)
            if parsed is not None and parsed[0] == stream_id:
                in_run = abs(float(parsed[1].get("started") or 0) - started) < 1e-3
                if not in_run and out:
                    break  # the run is over
            continue
        if not in_run or not line.startswith(prefix):
            continue
        parsed = _parse(line)
        if parsed is None:
            continue
        seq = parsed[1].get("seq")
        if isinstance(seq, int) and after < seq < before:
            out.append(strip_stream(line, stream_id))
    return out
