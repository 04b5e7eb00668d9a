"""`emostream label`: an emotion timeline of one recording."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from streamer.cli.args import (add_alerts, add_channels, add_model, add_window, alert_rules_arg,
                               channel_names_arg, warn)
from streamer.errors import UsageError
from streamer.formats import FORMATS


def configure(p: argparse.ArgumentParser) -> None:
    """The options of `label`."""
    p.add_argument("file", metavar="FILE")
    p.add_argument("-f", "--format", choices=FORMATS, default="json")
    p.add_argument("-o", "--output", metavar="OUT", help="output file (default: stdout)")
    add_window(p)
    add_channels(p)
    add_alerts(p)
    add_model(p)
    p.add_argument("--summary", metavar="PATH", help="also write a per-channel summary as JSON")
    p.add_argument("--plot", metavar="PNG", help="also draw the timeline as a PNG")
    p.add_argument("--clips", metavar="DIR", help="also write the audio of every alert's whole stretch "
                   "(1 s margins) to DIR/<start>-<end>-<channel>-<label>.wav, for review")
    p.add_argument("--clips-format", choices=("wav", "mp3"), default="wav", help="format of --clips (default: wav)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress or warnings")


def run(args: argparse.Namespace) -> int:
    """An emotion timeline of one recording in one of the output formats."""
    from streamer.formats import open_writer
    from streamer.labelling import analyse, load_model

    meta, clf = load_model(args.model, args.window, args.hop)
    names = channel_names_arg(args)
    rules = alert_rules_arg(args)
    from streamer.sources import open_source

    if args.clips:
        from streamer.clips import check_clips_dir

        if not rules:
            raise UsageError("--clips needs alert rules (--alert or --alerts): a clip is an alert's stretch")
        check_clips_dir(args.clips, args.file)
    source = open_source(args.file)  # opened before the output so a bad input leaves no file behind
    out = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout
    summary = None
    collected: list[dict[str, Any]] = []
    try:
        writer = open_writer(args.format, out)
        if args.summary:
            from streamer.summary import Summary

            summary = Summary()

        def on_event(ev: dict[str, Any]) -> None:
            writer.event(ev)
            if summary is not None:
                summary.add(ev)
            if args.plot or args.clips:
                collected.append(ev)

        res = analyse(source, meta, clf, channels=args.channels, channel_names=names, alert_rules=rules,
                      on_header=writer.header, on_event=on_event, progress=not args.quiet)
        writer.close(duration=res.duration)
    finally:
        if args.output:
            out.close()
        else:
            sys.stdout.flush()
    warn(args, res.stats.warnings)
    if summary is not None:
        with open(args.summary, "w", encoding="utf-8") as fh:
            json.dump(summary.result(res.duration), fh, indent=2)
            fh.write("\n")
    if args.plot:
        from streamer.plot import plot_timeline

        plot_timeline(collected, res.duration, args.plot, meta.labels, channels=res.channel_names,
                      source=res.source)
    if args.clips:
        from streamer.clips import alert_stretches, plan_clips, write_clips

        clips = plan_clips(alert_stretches(collected, rules or [], hop_s=meta.features.hop_s), res.duration)
        write_clips(args.file, clips, args.clips, args.clips_format)
        if not args.quiet:
            print(f"emostream: {len(clips)} review clip{'' if len(clips) == 1 else 's'} in {args.clips}",
                  file=sys.stderr)
    return 0
