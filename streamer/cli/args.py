"""Argument helpers shared by the command modules: option groups, value parsers, option checks.

Nothing here imports more than the standard library and streamer.errors/formats at import time, so
building the parser stays quick; the objects an option names are imported when it is used.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any
from urllib.parse import urlsplit

from streamer.errors import UsageError

__all__ = [
    "AUDIO_HELP",
    "positive",
    "add_model",
    "add_channels",
    "add_alerts",
    "add_window",
    "add_token",
    "channel_names_arg",
    "alert_rules_arg",
    "check_ws_url",
    "warn",
]


AUDIO_HELP = ("an audio or video file: WAV, FLAC, OGG, AIFF, MP3, M4A/AAC, Opus, MP4/MOV/WebM; any rate, "
              "any channels; - reads standard input")


def positive(text: str) -> float:
    """An argparse type: a number greater than zero."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return v


def add_model(p: argparse.ArgumentParser) -> None:
    """--model PATH."""
    p.add_argument("--model", metavar="PATH", help="a .tflite model with its .json beside it "
                   "(default: the shipped model, or $EMOSTREAM_MODEL)")


def add_channels(p: argparse.ArgumentParser) -> None:
    """--channels mix|split and --channel-names A,B."""
    p.add_argument("--channels", choices=["mix", "split"], default="mix",
                   help="mix all channels into one timeline, or one timeline per channel")
    p.add_argument("--channel-names", metavar="A,B", help="names for split channels, e.g. agent,customer")


def add_alerts(p: argparse.ArgumentParser) -> None:
    """--alert RULE (repeatable) and --alerts FILE."""
    p.add_argument("--alert", action="append", default=[], metavar="RULE",
                   help='an alert rule, e.g. "customer:angry,fearful>10" (channel:labels>seconds)')
    p.add_argument("--alerts", metavar="FILE", help="alert rules from a JSON file")


# --window/--hop bounds: a window must hold a few feature frames and stay small enough to analyse;
# a hop below a few feature hops (20 ms) only repeats windows. inf, nan and 1e9 are usage errors.
WINDOW_S = (0.5, 600.0)
HOP_S = (0.05, 600.0)


def seconds_between(lo: float, hi: float) -> Any:
    """An argparse type: a finite number of seconds in [lo, hi]."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text[:40]!r}") from None
        if not lo <= v <= hi:  # also refuses nan and inf
            raise argparse.ArgumentTypeError(f"must be between {lo:g} and {hi:g} seconds: {text[:40]!r}")
        return v
    return parse


def add_window(p: argparse.ArgumentParser) -> None:
    """--window S and --hop S (overrides of the model's window)."""
    p.add_argument("--window", type=seconds_between(*WINDOW_S), metavar="S",
                   help=f"window length in seconds ({WINDOW_S[0]:g} to {WINDOW_S[1]:g})")
    p.add_argument("--hop", type=seconds_between(*HOP_S), metavar="S",
                   help=f"seconds between window starts ({HOP_S[0]:g} to {HOP_S[1]:g})")


def add_token(p: argparse.ArgumentParser, help: str | None = None) -> None:
    """--token (default $EMOSTREAM_TOKEN)."""
    p.add_argument("--token", default=os.environ.get("EMOSTREAM_TOKEN"),
                   help=help or "the server's shared secret (default $EMOSTREAM_TOKEN)")


def channel_names_arg(args: argparse.Namespace) -> list[str] | None:
    """Parse --channel-names A,B (None when not given)."""
    text = getattr(args, "channel_names", None)
    if not text:
        return None
    names = [n.strip() for n in text.split(",")]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise UsageError(f"--channel-names must be distinct, non-empty names: {text!r}")
    if getattr(args, "channels", "mix") == "mix" and len(names) != 1:
        raise UsageError("--channel-names with several names needs --channels split")
    return names


def alert_rules_arg(args: argparse.Namespace) -> list | None:
    """Alert rules from --alert and --alerts (None when neither is given).

    A label the model (--model) does not have is refused: such a rule could never fire.
    """
    specs = getattr(args, "alert", None) or []
    path = getattr(args, "alerts", None)
    if not specs and not path:
        return None
    from streamer.alerts import load_rules, parse_rule
    from streamer.config import load_meta

    labels = load_meta(getattr(args, "model", None)).labels
    rules = [parse_rule(s, labels) for s in specs]
    if path:
        rules.extend(load_rules(path, labels))
    return rules


def check_ws_url(url: str, path: str) -> None:
    """A ws:// or wss:// address with a host, or a UsageError naming the expected form."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise UsageError(f"expected a ws://HOST:PORT{path} address, got {url!r}")


def warn(args: Any, messages: list[str]) -> None:
    """Print warnings on stderr unless --quiet."""
    if not getattr(args, "quiet", False):
        for m in messages:
            print(f"emostream: warning: {m}", file=sys.stderr)


# --- serving, shared by `serve` and `demo` ------------------------------------------------------
# (the server's own runner takes this over once the server package offers one)

def server_config(args: argparse.Namespace) -> Any:
    """The ServerConfig for the serving options of `serve` and `demo`."""
    from streamer.server import ServerConfig

    return ServerConfig(host=args.host, port=args.port, token=getattr(args, "token", None),
                        record=getattr(args, "record", None),
                        idle_timeout=getattr(args, "idle_timeout", 30.0),
                        allowed_hosts=list(getattr(args, "allowed_host", None) or []),
                        max_upload_seconds=getattr(args, "max_upload_seconds", 7200.0),
                        memory_budget=int(getattr(args, "memory_budget", 300.0) * (1 << 20)),
                        workers=int(os.environ.get("EMOSTREAM_WORKERS") or 2))


async def serve_until_stopped(server: Any, source: Any, realtime: bool, linger: float | None,
                              announce: Any) -> None:
    """Start ``server``, run ``source`` (if any), and close on SIGINT/SIGTERM.

    With ``linger``, stop that many seconds after the source ends.
    """
    import asyncio
    import signal

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
            server.spawn(stop_later())
        await stop.wait()
        print("emostream: stopping", file=sys.stderr, flush=True)
    finally:
        await server.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
