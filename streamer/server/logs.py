"""Logging for operators: one access line per HTTP request and WebSocket connection, as text or
JSON (``--log-format json`` for log shippers), at ``--log-level``."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

from streamer.errors import UsageError

__all__ = ["configure", "access", "JsonFormatter", "TextFormatter", "LOG_FORMATS", "LOG_LEVELS"]

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")

access_log = logging.getLogger("emostream.access")

# the fields an access record carries, in the order a text line shows them
_FIELDS = ("client", "method", "path", "status", "close_code", "duration_s")


def access(client: str, method: str, path: str, duration_s: float, *, status: int | None = None,
           close_code: int | None = None, **extra: Any) -> None:
    """Log one finished request (``status``) or WebSocket connection (``close_code``).

    ``path`` must already be free of secrets (see :func:`streamer.server.auth.redact`).
    """
    if not access_log.isEnabledFor(logging.INFO):
        return
    fields = {"client": client, "method": method, "path": path, "status": status, "close_code": close_code,
              "duration_s": round(duration_s, 4), **extra}
    fields = {k: v for k, v in fields.items() if v is not None}
    result = f"{status}" if status is not None else f"ws {close_code}"
    access_log.info("%s %s %s %s %.1fms", client, method, path, result, duration_s * 1000,
                    extra={"fields": fields})


class TextFormatter(logging.Formatter):
    """``2026-12-03T21:00:00.123Z INFO emostream.access 127.0.0.1:5555 GET /streams 200 1.2ms``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        line = f"{stamp} {record.levelname} {record.name} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message`` and an access record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {"ts": round(record.created, 3), "level": record.levelname.lower(),
                               "logger": record.name, "message": record.getMessage()}
        obj.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False, default=str)


def configure(fmt: str = "text", level: str = "info", stream: IO[str] | None = None) -> logging.Handler:
    """Send the ``emostream`` loggers to ``stream`` (stderr) in ``fmt`` from ``level`` up (and the
    ``websockets`` and ``asyncio`` loggers from ``warning`` up).

    Replaces a handler an earlier call installed; returns the handler.

    Raises:
        UsageError: an unknown format or level.
    """
    if fmt not in LOG_FORMATS:
        raise UsageError(f"unknown log format {fmt!r} (expected {', '.join(LOG_FORMATS)})")
    if level.lower() not in LOG_LEVELS:
        raise UsageError(f"unknown log level {level!r} (expected {', '.join(LOG_LEVELS)})")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler._emostream = True  # type: ignore[attr-defined]
    wanted = getattr(logging, level.upper())
    # the libraries' own problems (a failed handshake handler, a task's lost exception) come out in
    # the same format, so a JSON log stays JSON; their info lines would only repeat the access log
    for name, lvl in (("emostream", wanted), ("websockets", max(wanted, logging.WARNING)),
                      ("asyncio", max(wanted, logging.WARNING))):
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            if getattr(h, "_emostream", False):
                logger.removeHandler(h)
        logger.addHandler(handler)
        logger.setLevel(lvl)
        logger.propagate = False
    return handler
