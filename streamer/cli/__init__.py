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

# command -> (one-line help, examples shown at the end of its --help), in the order `emostream --help` lists them
COMMANDS: dict[str, tuple[str, str]] = {
    "classify": ("one emotion per file",
                 "emostream classify call.wav\n"
                 "emostream classify --json --channels split --channel-names agent,customer *.wav"),
    "label": ("an emotion timeline of one recording (or of many with --out-dir)",
              "emostream label call.mp3 -f vtt -o call.vtt\n"
              "emostream label call.wav --channels split --channel-names agent,customer "
              "--alert 'customer:angry,fearful>10' --summary call.summary.json\n"
              "emostream label recordings/ --out-dir timelines/ -f csv"),
    "serve": ("serve a live timeline over WebSockets",
              "emostream serve --file call.wav --realtime\n"
              "emostream serve --mic --device 2\n"
              "emostream serve --host 0.0.0.0 --token SECRET     # network ingest only"),
    "listen": ("print a server's timeline as it arrives",
               "emostream listen ws://127.0.0.1:8765/ws\n"
               "emostream listen 'ws://127.0.0.1:8765/ws?stream=call-1' --since 120 -f jsonl"),
    "send": ("stream a file to a server's ingest endpoint",
             "emostream send call.wav 'ws://127.0.0.1:8765/ingest?stream=call-1' --realtime\n"
             "emostream send call.wav 'ws://127.0.0.1:8765/ingest?stream=call-1' --rate 8000 --encoding mulaw"),
    "demo": ("serve the bundled example in real time",
             "emostream demo\n"
             "emostream demo --port 8080 --fast --seconds 30"),
    "devices": ("list audio input devices",
                "emostream devices"),
    "info": ("model, labels, feature parameters and runtime",
             "emostream info\n"
             "emostream info --json --model other.tflite"),
}


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks and shows each option's default where it has one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (action.option_strings and action.dest != "token"  # never print a secret from the environment
                and default not in (None, False, [], argparse.SUPPRESS)
                and "default" not in text and text != argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 64, as for every other bad input
        # main() prefixes "emostream: error: "; the command's name goes at the end, not twice in front
        raise UsageError(f"{message} (see: {self.prog} --help)")


def _module(command: str) -> ModuleType:
    import importlib

    return importlib.import_module(f"streamer.cli.{command}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: every command's options, or with ``only`` just that command's.

    Each command module is imported to add its options; ``main`` passes the command being run, so
    `emostream label ...` imports no other command's module, and `emostream --help` none at all.
    """
    ap = _Parser(prog="emostream", description="Speech emotion timelines for live and long audio.",
                 epilog="`emostream COMMAND --help` shows a command's options and examples.",
                 formatter_class=_Formatter)
    ap.add_argument("--version", action="version", version=f"emostream {_version()}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (text, examples) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=text)  # listed in the help; its options are not needed now
            continue
        mod = _module(name)
        p = sub.add_parser(name, help=text, description=(mod.__doc__ or text).strip().splitlines()[0],
                           epilog="examples:\n" + "\n".join(f"  {ln}" for ln in examples.splitlines()),
                           formatter_class=_Formatter)
        mod.configure(p)
    return ap


def _command_in(argv: Sequence[str]) -> str:
    """The command named on the command line ("" when none: the top-level help or an error)."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else ""
    return ""


def _version() -> str:
    from streamer import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        parser = build_parser(_command_in(argv))
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help(sys.stderr)
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
