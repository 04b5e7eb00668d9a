"""`emostream serve`: serve a live timeline over WebSockets (a file, the microphone, or network ingest)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from streamer.cli.args import (add_alerts, add_channels, add_model, add_token, add_window, alert_rules_arg,
                               channel_names_arg, positive, serve_until_stopped, server_config)
from streamer.errors import UsageError
from streamer.server.logs import LOG_FORMATS, LOG_LEVELS


def configure(p: argparse.ArgumentParser) -> None:
    """The options of `serve`."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--file", metavar="F", help="analyse this file")
    g.add_argument("--mic", action="store_true", help="analyse the microphone")
    p.add_argument("--realtime", action="store_true", help="pace --file as if it were live")
    p.add_argument("--device", metavar="D", help="input device index or name (with --mic)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    add_token(p, "shared secret required on every request (needed to bind beyond loopback; "
              "default $EMOSTREAM_TOKEN)")
    p.add_argument("--record", metavar="PATH", help="append every timeline message to this JSONL file")
    p.add_argument("--idle-timeout", type=positive, default=30.0, metavar="S",
                   help="close an ingest stream that sends nothing for S seconds")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a Host name the server answers to besides loopback names and --host (repeatable; "
                   "'*' for any): without a token, other names are refused (DNS rebinding)")
    p.add_argument("--max-upload-seconds", type=positive, default=7200.0, metavar="S",
                   help="longest recording POST /label accepts, decoded duration (default: 7200)")
    p.add_argument("--memory-budget", type=positive, default=300.0, metavar="MB",
                   help="resident memory past which new ingest streams (close 1013) and uploads (503) are "
                   "refused until it falls (default: 300)")
    p.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                   help="access and server log lines on stderr: text, or one JSON object per line (default: text)")
    p.add_argument("--log-level", choices=LOG_LEVELS, default="info",
                   help="least severe log lines shown; info logs every request and connection (default: info)")
    p.add_argument("--redis", metavar="URL",
                   help="share streams with other nodes through Redis (redis://HOST:6379/0; needs emostream[cluster])")
    p.add_argument("--node-id", metavar="NAME", help="this node's name in a --redis cluster (default: host-pid)")
    add_window(p)
    add_channels(p)
    add_alerts(p)
    add_model(p)


def _announce(server: Any, extra: str = "") -> None:
    cfg = server.config
    ws = server.url.replace("http", "ws", 1)
    tok = "?token=TOKEN" if cfg.token else ""  # never print the secret itself
    print(f"emostream: serving {server.url}{tok}", flush=True)
    print(f"  timeline  {ws}ws{tok}\n  ingest    {ws}ingest?stream=ID{'&token=...' if tok else ''}\n"
          f"  streams   {server.url}streams{extra}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Serve a file's, the microphone's or network streams' timelines until Ctrl-C."""
    import asyncio

    from streamer.labelling import load_model, make_labeler
    from streamer.pipeline import make_pipeline_factory
    from streamer.server import EmoServer
    from streamer.server.logs import configure

    if args.realtime and not args.file:
        raise UsageError("--realtime needs --file")
    if args.device is not None and not args.mic:
        raise UsageError("--device needs --mic")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"bad port {args.port}")
    if args.node_id is not None and not args.redis:
        raise UsageError("--node-id needs --redis")
    backend = None
    if args.redis:  # before the model loads: a missing Redis is one line and exit 4 at once
        from streamer.server.redis_backend import RedisBackend, check_redis

        check_redis(args.redis)
        backend = RedisBackend(args.redis, args.node_id)
    names = channel_names_arg(args)
    rules = alert_rules_arg(args)
    source = None
    if args.file:
        from streamer.sources import open_source

        source = open_source(args.file)
    meta, clf = load_model(args.model, args.window, args.hop)
    if args.mic:
        from streamer.mic import MicSource

        device: Any = args.device
        if isinstance(device, str) and device.isdigit():
            device = int(device)
        source = MicSource(device=device)
    kw = dict(channels=args.channels, channel_names=names, alert_rules=rules)
    configure(args.log_format, args.log_level)
    server = EmoServer(server_config(args), pipeline_factory=make_pipeline_factory(meta, clf, **kw),
                       labeler=make_labeler(meta, clf, **kw), backend=backend)
    if backend is not None:
        backend.attach(server.hub)
    try:
        asyncio.run(serve_until_stopped(server, source, bool(args.realtime), None, _announce))
    finally:
        if source is not None:
            source.close()
    return 0
