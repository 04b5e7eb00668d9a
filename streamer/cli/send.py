"""`emostream send`: stream a file to a server's ingest endpoint."""

from __future__ import annotations

import argparse
import sys
from urllib.parse import parse_qsl, urlsplit

from streamer.cli.args import AUDIO_HELP, add_token, check_ws_url
from streamer.errors import UsageError


def configure(p: argparse.ArgumentParser) -> None:
    """The options of `send`."""
    from streamer.protocol import ENCODINGS

    p.add_argument("file", metavar="FILE", help=AUDIO_HELP)
    p.add_argument("url", metavar="ws://HOST:PORT/ingest?stream=ID", help="the server's ingest address and the stream's id")
    p.add_argument("--realtime", action="store_true", help="send at the file's own pace")
    p.add_argument("--rate", type=int, default=None, metavar="HZ",
                   help="send at this sample rate (default: the file's)")
    p.add_argument("--encoding", choices=ENCODINGS, default="pcm_s16le", help="sample encoding on the wire")
    add_token(p)
    p.add_argument("--quiet", "-q", action="store_true", help="do not print the timeline")


def run(args: argparse.Namespace) -> int:
    """Stream a file to a server's ingest endpoint and print the timeline it returns."""
    import asyncio

    from streamer.client import send_file

    check_ws_url(args.url, "/ingest?stream=ID")
    if "stream" not in dict(parse_qsl(urlsplit(args.url).query)):
        raise UsageError("the ingest address needs ?stream=ID")
    asyncio.run(send_file(args.file, args.url, realtime=args.realtime, rate=args.rate,
                          encoding=args.encoding, token=args.token, out=None if args.quiet else sys.stdout))
    return 0
