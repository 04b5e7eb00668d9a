"""`emostream classify`: one emotion per file."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from streamer.cli.args import AUDIO_HELP, add_channels, add_model, channel_names_arg, warn
from streamer.errors import EmostreamError


def configure(p: argparse.ArgumentParser) -> None:
    """The options of `classify`."""
    p.add_argument("files", nargs="+", metavar="FILE", help=AUDIO_HELP + "; any number")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    add_model(p)
    add_channels(p)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress or warnings")


def run(args: argparse.Namespace) -> int:
    """One label per file: the mean of the speech windows' probabilities."""
    from streamer.labelling import analyse, load_model, overall
    from streamer.outputs import display_name

    meta, clf = load_model(args.model)
    names = channel_names_arg(args)
    status = 0
    for path in args.files:
        shown = display_name(path)  # a name that is not UTF-8 prints (and goes into JSON) with U+FFFD
        try:
            res = analyse(path, meta, clf, channels=args.channels, channel_names=names)
        except EmostreamError as exc:
            print(f"emostream: error: {exc}", file=sys.stderr)
            status = status or exc.exit_code
            continue
        warn(args, res.stats.warnings)
        chans: list[tuple[int | None, str | None]] = [(None, None)] if args.channels == "mix" else \
            list(enumerate(res.channel_names))
        for ch, name in chans:
            label, conf, probs = overall(res, meta.labels, ch)
            if label is None:
                warn(args, [f"{shown}: no speech found" + (f" on channel {name}" if name else "")])
            if args.json:
                obj: dict[str, Any] = {"path": shown, "label": label, "confidence": round(conf, 4), "probs": probs}
                if name is not None:
                    obj["channel"] = ch
                    obj["channel_name"] = name
                print(json.dumps(obj), flush=True)
            else:
                cols = [shown] + ([name] if name is not None else []) + [label or "none", f"{conf:.3f}"]
                print("\t".join(cols), flush=True)
    return status
