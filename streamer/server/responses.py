"""HTTP responses: JSON, errors, static bytes, and their bytes on the wire."""

from __future__ import annotations

import http
import json
from typing import Any

from websockets.datastructures import Headers
from websockets.http11 import Response

__all__ = ["json_response", "error_response", "response", "serialize"]


def json_response(status: int, obj: Any) -> Response:
    """A JSON response."""
    return response(status, (json.dumps(obj) + "\n").encode(), "application/json")


def error_response(status: int, message: str) -> Response:
    """A JSON error: ``{"error": message, "status": status}``."""
    return json_response(status, {"error": message, "status": status})


def response(status: int, body: bytes, content_type: str) -> Response:
    """A complete response that closes the connection and is never cached or sniffed."""
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                       ("Connection", "close")])
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def serialize(resp: Response) -> bytes:
    """The response's bytes on the wire."""
    head = f"HTTP/1.1 {resp.status_code} {resp.reason_phrase}\r\n".encode()
    return head + resp.headers.serialize() + bytes(resp.body)
