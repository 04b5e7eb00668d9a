"""Server settings and the small types the server's parts share."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from streamer.protocol import STREAM_ID_PATTERN

__all__ = ["ServerConfig", "PipelineLike", "PipelineFactory", "Labeler", "SourceRunner", "is_loopback",
           "WEB_DIR", "MAIN_STREAM", "STREAM_ID"]

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
MAIN_STREAM = "main"  # the stream of the server's own source (--file, --mic)
STREAM_ID = re.compile(STREAM_ID_PATTERN + r"\Z")  # use .match: \Z, unlike $, refuses a trailing newline


class PipelineLike(Protocol):
    """What the server needs of a pipeline (streamer.pipeline.Pipeline has it): the facts a stream's
    hello is made of (:meth:`streamer.events.Hello.of`), and the analysis."""

    labels: list[str]
    sample_rate: int
    window_s: float
    hop_s: float
    channel_names: list[str]
    model_info: dict[str, str]

    def feed(self, block: Any) -> list[Any]: ...
    def finish(self) -> list[Any]: ...


PipelineFactory = Callable[[int, int], PipelineLike]   # (sample_rate, channels) -> pipeline
Labeler = Callable[[str, str], dict[str, Any]]          # (path, display name) -> label -f json object
SourceRunner = Callable[..., Any]                        # streamer.pipeline.run


@dataclass
class ServerConfig:
    """Server settings (the ``serve`` command fills them from its options)."""

    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    origins: list[str] = field(default_factory=list)  # extra allowed browser origins
    allowed_hosts: list[str] = field(default_factory=list)  # Host names served beyond loopback names ("*": any)
    max_message: int = 1 << 20        # largest WebSocket message accepted (bytes)
    max_upload: int = 50 << 20        # largest POST /label body (bytes)
    max_queue: int = 1024             # frames a subscriber may have waiting before it is dropped
    feed_queue: int = 16384           # the same for a wallboard feed (every stream's messages)
    history: int = 100_000            # messages kept per stream for since replay
    history_bytes: int = 16 << 20     # ... and bytes of them per stream
    history_total_bytes: int = 96 << 20  # ... and bytes of them for all streams (ended streams' go first)
    ingest_budget: int = 32 << 20     # ingest audio received but not analysed, all streams (backpressure)
    memory_budget: int | None = None  # resident bytes past which new streams and uploads are refused (serve: 300 MB)
    record: str | None = None         # JSONL file that every message is appended to
    idle_timeout: float = 30.0        # an ingest stream that sends nothing this long is closed
    open_timeout: float = 10.0        # to send a request head / finish the WebSocket handshake
    drop_grace: float = 2.0           # a dropped subscriber's connection is aborted after this
    write_limit: int = 64 * 1024      # bytes buffered for a subscriber before its frames queue
    health_s: float = 5.0             # how often a live source's capture health is checked
    workers: int = 2                  # threads running ingest pipelines
    label_jobs: int = 2               # uploads labelled at once (others wait)
    upload_queue: int = 4             # uploads that may wait for a slot; more get 503 + Retry-After
    max_upload_seconds: float | None = 7200.0  # longest uploaded recording labelled (decoded duration)
    upload_timeout: float = 300.0     # the whole body of an upload must arrive within this
    web_dir: Path = WEB_DIR


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
