"""The `emostream` command line: parses arguments and wires objects together, nothing more.

One module per command (``classify``, ``label``, ``serve``, ``listen``, ``send``, ``demo``,
``devices``, ``info``), each with ``configure(parser)`` (its options) and ``run(args) -> int``;
option helpers shared between commands live in :mod:`streamer.cli.args`. Only this module imports
the command modules, and nothing outside the package imports any of it (the console script and
``python -m streamer`` call :func:`main`). Heavy modules are imported inside ``run`` so that
``emostream --help`` and ``classify`` on one short file start quickly.
"""

from __future__ import annotations

import argparse
import os
import sys
from types import ModuleType
from typing import Sequence

from streamer.errors import EmostreamError, UsageError

__all__ = ["main", "build_parser", "COMMANDS"]

# command -> one-line help, in the order `emostream --help` lists them
COMMANDS = {
    "classify": "one emotion per file",
    "label": "an emotion timeline of one recording",
    "serve": "serve a live timeline over WebSockets",
    "listen": "print a server's timeline as it arrives",
    "send": "stream a file to a server's ingest endpoint",
    "demo": "serve the bundled example in real time",
    "devices": "list audio input devices",
    "info": "model, labels, feature parameters and runtime",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 64, as for every other bad input
        raise UsageError(f"{self.prog}: {message}")


def _module(command: str) -> ModuleType:
    import importlib

    return importlib.import_module(f"streamer.cli.{command}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    ap = _Parser(prog="emostream", description="Speech emotion timelines for live and long audio.")
    ap.add_argument("--version", action="version", version=f"emostream {_version()}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, text in COMMANDS.items():
        mod = _module(name)
        p = sub.add_parser(name, help=text, description=(mod.__doc__ or text).strip().splitlines()[0])
        mod.configure(p)
    return ap


def _version() -> str:
    from streamer import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    try:
        args = build_parser().parse_args(argv)
        if not args.command:
            build_parser().print_help(sys.stderr)
            return 64
        return int(_module(args.command).run(args) or 0)
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
