"""`emostream listen`: print a server's timeline as it arrives."""

from __future__ import annotations

import argparse
import sys

from streamer.cli.args import add_token, check_ws_url
from streamer.errors import UsageError


def configure(p: argparse.ArgumentParser) -> None:
    """The options of `listen`."""
    p.add_argument("url", metavar="ws://HOST:PORT/ws", help="the server's timeline address (?stream=ID for one "
                   "ingest stream)")
    p.add_argument("--since", type=int, default=None, metavar="N", help="replay messages after seq N")
    p.add_argument("-f", "--format", choices=["jsonl", "text"], default="text",
                   help="readable lines, or each message as it came (one JSON object a line)")
    add_token(p)
    p.add_argument("--no-reconnect", action="store_true", help="exit when the connection drops")


def run(args: argparse.Namespace) -> int:
    """Print a server's timeline as it arrives."""
    import asyncio

    from streamer.client import listen

    check_ws_url(args.url, "/ws")
    if args.since is not None and args.since < 0:
        raise UsageError("--since must be 0 or more")
    return asyncio.run(listen(args.url, sys.stdout, args.format, args.since, args.token, not args.no_reconnect))
