"""`emostream demo`: serve the bundled example conversation in real time."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from streamer.cli.args import positive, serve_until_stopped, server_config
from streamer.errors import UsageError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "conversation.flac"


def configure(p: argparse.ArgumentParser) -> None:
    """The options of `demo`."""
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8765, help="port to listen on (0: any free one)")
    p.add_argument("--fast", action="store_true", help="do not pace the example in real time")
    p.add_argument("--seconds", type=positive, default=None,
                   help="stop the server this many seconds after the example ends")


def run(args: argparse.Namespace) -> int:
    """Serve the bundled example conversation in real time and print the page's address."""
    import asyncio

    from streamer.labelling import load_model, make_labeler
    from streamer.pipeline import make_pipeline_factory
    from streamer.server import EmoServer
    from streamer.sources import open_source

    if not EXAMPLE.exists():
        raise UsageError(f"the bundled example is missing: {EXAMPLE}")
    source = open_source(EXAMPLE)
    meta, clf = load_model()
    args.token = None
    server = EmoServer(server_config(args), pipeline_factory=make_pipeline_factory(meta, clf),
                       labeler=make_labeler(meta, clf))

    def announce(srv: Any) -> None:
        pace = "as fast as it goes" if args.fast else f"in real time ({source.duration or 0:.0f} s)"
        print(f"emostream demo: open {srv.url} in a browser", flush=True)
        print(f"  playing {EXAMPLE.name} {pace}; `emostream listen {srv.url.replace('http', 'ws', 1)}ws` "
              "prints it here; Ctrl-C stops", file=sys.stderr, flush=True)

    try:
        asyncio.run(serve_until_stopped(server, source, not args.fast, args.seconds, announce))
    finally:
        source.close()
    return 0
