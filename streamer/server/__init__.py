"""The asyncio server: web page, timeline subscribers, network ingest, stream list, uploads,
health and metrics.

Routes (one port; every request carries the token when one is set):

    GET  /                     the web page (streamer/web/index.html) and its static files
    GET  /ws[?since=N][&stream=ID]   WebSocket: a stream's hello, then every message after seq N
    GET  /ws?streams=all       WebSocket: every stream's messages, each with "stream" (the wallboard)
    GET  /ingest?stream=ID     WebSocket: start, binary audio frames, stop; answers the timeline
    GET  /streams              JSON list of streams: id, start time, current emotion per channel
    GET  /health               200 {"status": "ok", "streams": N, ...} or 503
    GET  /metrics              Prometheus text
    POST /label                an uploaded recording (raw body or multipart) -> the label -f json object

The parts, each importing only those below it:

    app         EmoServer: life cycle, sources, routing each WebSocket to ingest or subscribe
    routes      Router: GET answers, /health, /metrics, POST dispatch, access log of HTTP answers
    ingest      IngestSession and Feeder: /ingest streams analysed in the thread pool
    subscribe   /ws: one stream's subscriber, or the feed of every stream
    uploads     POST /label
    runner      a pull source (file, microphone) run in a thread into a stream
    wsio        the subscriber send loop, errors that close, refused input
    connection  SniffingConnection: GET to websockets, anything else read here (takes callables)
    auth        token and origin checks, tokens kept out of logs
    metrics     the Prometheus registry; logs: access lines (text or JSON)
    hub         Hub, Stream, Subscriber (the feed of every stream, other nodes' streams followed)
    backend     the HubBackend and HubObserver protocols; memory: the one-process backend
    message     Message: a stream's event, encoded once when first sent
    config      ServerConfig and shared types

CPU work never runs on the event loop: a file or microphone source runs the blocking
``pipeline.run`` in a thread and hands events over with ``call_soon_threadsafe``; ingest streams
run ``Pipeline.feed`` in a small thread pool, one frame at a time per stream.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["EmoServer", "ServerConfig", "PipelineLike", "is_loopback", "WEB_DIR", "MAIN_STREAM", "Hub",
           "HubBackend", "Stream", "Subscriber", "MemoryBackend"]

# lazy, so that `import streamer.server.logs` (the CLI's options) does not load websockets
_WHERE = {"EmoServer": "app", "ServerConfig": "config", "PipelineLike": "config", "is_loopback": "config",
          "WEB_DIR": "config", "MAIN_STREAM": "config", "Hub": "hub", "HubBackend": "hub", "Stream": "hub",
          "Subscriber": "hub", "MemoryBackend": "memory"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'streamer.server' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"streamer.server.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
