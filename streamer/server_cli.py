"""The `serve` and `demo` commands: wire the model, a source and the server together."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable

from streamer.errors import UsageError

__all__ = ["cmd_serve", "cmd_demo", "make_pipeline_factory", "make_labeler", "EXAMPLE"]

EXAMPLE = Path(__file__).resolve().parent / "examples" / "conversation.flac"


def make_pipeline_factory(meta: Any, classifier: Any, *, channels: str = "mix",
                          channel_names: list[str] | None = None, alert_rules: list | None = None
                          ) -> Callable[[int, int], Any]:
    """A (sample_rate, channels) -> Pipeline factory sharing one model.

    Channel names are used when their count fits the stream (an ingest stream may be mono while
    the names were given for stereo); otherwise the defaults (``mix``, ``ch1``...) apply.
    """
    from streamer.pipeline import Pipeline

    def factory(rate: int, in_channels: int) -> Any:
        out = 1 if channels == "mix" else in_channels
        names = channel_names if channel_names and len(channel_names) == out else None
        return Pipeline(meta, classifier, in_rate=rate, in_channels=in_channels, channels=channels,
                        channel_names=names, alert_rules=alert_rules)
    return factory


def make_labeler(meta: Any, classifier: Any, *, channels: str = "mix", channel_names: list[str] | None = None,
                 alert_rules: list | None = None) -> Callable[[str, str], dict[str, Any]]:
    """A (path, display name) -> ``label -f json`` object function for ``POST /label``."""
    from streamer.formats import open_writer
    from streamer.labelling import analyse
    from streamer.sources import open_source

    def label(path: str, name: str) -> dict[str, Any]:
        out = io.StringIO()
        writer = open_writer("json", out)
        with open_source(path) as src:
            n = src.channels if channels == "split" else 1
            names = channel_names if channel_names and len(channel_names) == n else None
            res = analyse(src, meta, classifier, channels=channels, channel_names=names,
                          alert_rules=alert_rules, on_header=writer.header, on_event=writer.event)
        writer.close(duration=res.duration)
        obj = json.loads(out.getvalue())
        obj["source"] = name
        return obj
    return label


def _config(args: argparse.Namespace) -> Any:
    from streamer.server import ServerConfig

    return ServerConfig(host=args.host, port=args.port, token=getattr(args, "token", None),
                        record=getattr(args, "record", None),
                        idle_timeout=getattr(args, "idle_timeout", 30.0),
                        workers=int(os.environ.get("EMOSTREAM_WORKERS") or 2))


async def _serve(server: Any, source: Any, realtime: bool, linger: float | None, announce: Callable[[Any], None]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            pass
    await server.start()
    try:
        announce(server)
        task = server.start_source(source, realtime=realtime) if source is not None else None
        if task is not None and linger is not None:
            async def stop_later() -> None:
                await asyncio.gather(task, return_exceptions=True)
                await asyncio.sleep(linger)
                stop.set()
            server._spawn(stop_later())
        await stop.wait()
        print("emostream: stopping", file=sys.stderr, flush=True)
    finally:
        await server.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass


def _announce(server: Any, extra: str = "") -> None:
    cfg = server.config
    ws = server.url.replace("http", "ws", 1)
    tok = "?token=TOKEN" if cfg.token else ""  # never print the secret itself
    print(f"emostream: serving {server.url}{tok}", flush=True)
    print(f"  timeline  {ws}ws{tok}\n  ingest    {ws}ingest?stream=ID{'&token=...' if tok else ''}\n"
          f"  streams   {server.url}streams{extra}", file=sys.stderr, flush=True)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a file's, the microphone's or network streams' timelines until Ctrl-C."""
    from streamer.commands import alert_rules_arg, channel_names_arg
    from streamer.labelling import load_model
    from streamer.server import EmoServer

    if args.realtime and not args.file:
        raise UsageError("--realtime needs --file")
    if args.device is not None and not args.mic:
        raise UsageError("--device needs --mic")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"bad port {args.port}")
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
    server = EmoServer(_config(args), pipeline_factory=make_pipeline_factory(meta, clf, **kw),
                       labeler=make_labeler(meta, clf, **kw))
    try:
        asyncio.run(_serve(server, source, bool(args.realtime), None, _announce))
    finally:
        if source is not None:
            source.close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Serve the bundled example conversation in real time and print the page's address."""
    from streamer.labelling import load_model
    from streamer.server import EmoServer
    from streamer.sources import open_source

    if not EXAMPLE.exists():
        raise UsageError(f"the bundled example is missing: {EXAMPLE}")
    source = open_source(EXAMPLE)
    meta, clf = load_model()
    args.token = None
    server = EmoServer(_config(args), pipeline_factory=make_pipeline_factory(meta, clf),
                       labeler=make_labeler(meta, clf))

    def announce(srv: Any) -> None:
        pace = "as fast as it goes" if args.fast else f"in real time ({source.duration or 0:.0f} s)"
        print(f"emostream demo: open {srv.url} in a browser", flush=True)
        print(f"  playing {EXAMPLE.name} {pace}; `emostream listen {srv.url.replace('http', 'ws', 1)}ws` "
              "prints it here; Ctrl-C stops", file=sys.stderr, flush=True)

    try:
        asyncio.run(_serve(server, source, not args.fast, args.seconds, announce))
    finally:
        source.close()
    return 0
