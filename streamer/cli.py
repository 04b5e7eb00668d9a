"""The `emostream` command line: parses arguments and wires objects together, nothing more.

Heavy modules are imported inside each command so that `emostream --help` and `classify` on one
short file start quickly.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from streamer.errors import EmostreamError, UsageError

__all__ = ["main", "build_parser"]

FORMATS = ["json", "jsonl", "csv", "vtt", "srt", "audacity", "textgrid"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 64, as for every other bad input
        raise UsageError(f"{self.prog}: {message}")


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return v


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="PATH", help="a .tflite model with its .json beside it "
                   "(default: the shipped model, or $EMOSTREAM_MODEL)")


def _add_channels(p: argparse.ArgumentParser) -> None:
    p.add_argument("--channels", choices=["mix", "split"], default="mix",
                   help="mix all channels into one timeline, or one timeline per channel")
    p.add_argument("--channel-names", metavar="A,B", help="names for split channels, e.g. agent,customer")


def _add_alerts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alert", action="append", default=[], metavar="RULE",
                   help='an alert rule, e.g. "customer:angry,fearful>10" (channel:labels>seconds)')
    p.add_argument("--alerts", metavar="FILE", help="alert rules from a JSON file")


def _add_window(p: argparse.ArgumentParser) -> None:
    p.add_argument("--window", type=_positive, metavar="S", help="window length in seconds")
    p.add_argument("--hop", type=_positive, metavar="S", help="seconds between window starts")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    ap = _Parser(prog="emostream", description="Speech emotion timelines for live and long audio.")
    ap.add_argument("--version", action="version", version=f"emostream {_version()}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("classify", help="one emotion per file")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_model(p)
    _add_channels(p)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress or warnings")

    p = sub.add_parser("label", help="an emotion timeline of one recording")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-f", "--format", choices=FORMATS, default="json")
    p.add_argument("-o", "--output", metavar="OUT", help="output file (default: stdout)")
    _add_window(p)
    _add_channels(p)
    _add_alerts(p)
    _add_model(p)
    p.add_argument("--summary", metavar="PATH", help="also write a per-channel summary as JSON")
    p.add_argument("--plot", metavar="PNG", help="also draw the timeline as a PNG")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress or warnings")

    p = sub.add_parser("serve", help="serve a live timeline over WebSockets")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--file", metavar="F", help="analyse this file")
    g.add_argument("--mic", action="store_true", help="analyse the microphone")
    p.add_argument("--realtime", action="store_true", help="pace --file as if it were live")
    p.add_argument("--device", metavar="D", help="input device index or name (with --mic)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--token", default=os.environ.get("EMOSTREAM_TOKEN"),
                   help="shared secret required on every request (needed to bind beyond loopback; "
                   "default $EMOSTREAM_TOKEN)")
    p.add_argument("--record", metavar="PATH", help="append every timeline message to this JSONL file")
    p.add_argument("--idle-timeout", type=_positive, default=30.0, metavar="S",
                   help="close an ingest stream that sends nothing for S seconds")
    _add_window(p)
    _add_channels(p)
    _add_alerts(p)
    _add_model(p)

    p = sub.add_parser("listen", help="print a server's timeline as it arrives")
    p.add_argument("url", metavar="ws://HOST:PORT/ws")
    p.add_argument("--since", type=int, default=None, metavar="N", help="replay messages after seq N")
    p.add_argument("-f", "--format", choices=["jsonl", "text"], default="text")
    p.add_argument("--token", default=os.environ.get("EMOSTREAM_TOKEN"))
    p.add_argument("--no-reconnect", action="store_true", help="exit when the connection drops")

    p = sub.add_parser("send", help="stream a file to a server's ingest endpoint")
    p.add_argument("file", metavar="FILE")
    p.add_argument("url", metavar="ws://HOST:PORT/ingest?stream=ID")
    p.add_argument("--realtime", action="store_true", help="send at the file's own pace")
    p.add_argument("--rate", type=int, default=None, help="send at this sample rate (default: the file's)")
    p.add_argument("--encoding", choices=["pcm_s16le", "mulaw", "alaw", "f32le"], default="pcm_s16le")
    p.add_argument("--token", default=os.environ.get("EMOSTREAM_TOKEN"))
    p.add_argument("--quiet", "-q", action="store_true", help="do not print the timeline")

    p = sub.add_parser("demo", help="serve the bundled example in real time")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--fast", action="store_true", help="do not pace the example in real time")
    p.add_argument("--seconds", type=_positive, default=None,
                   help="stop the server this many seconds after the example ends")

    sub.add_parser("devices", help="list audio input devices")
    p = sub.add_parser("info", help="model, labels, feature parameters and runtime")
    _add_model(p)
    p.add_argument("--json", action="store_true")
    return ap


def _version() -> str:
    from streamer import __version__

    return __version__


def _dispatch(command: str) -> Callable[[argparse.Namespace], int]:
    if command in ("classify", "label", "info"):
        from streamer import commands

        return getattr(commands, f"cmd_{command}")
    if command in ("serve", "demo"):
        from streamer import server_cli

        return getattr(server_cli, f"cmd_{command}")
    if command in ("listen", "send"):
        from streamer import client

        return getattr(client, f"cmd_{command}")
    if command == "devices":
        from streamer import mic

        return mic.cmd_devices
    raise UsageError(f"unknown command {command!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    try:
        args = build_parser().parse_args(argv)
        if not args.command:
            build_parser().print_help(sys.stderr)
            return 64
        return int(_dispatch(args.command)(args) or 0)
    except EmostreamError as exc:
        print(f"emostream: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. piped into head): not an error worth a traceback
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
