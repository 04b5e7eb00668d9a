"""`emostream label`: an emotion timeline of one recording, or of a whole archive with --out-dir."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

from streamer.cli.args import (AUDIO_HELP, add_alerts, add_channels, add_model, add_window, alert_rules_arg,
                               channel_names_arg, warn)
from streamer.errors import UsageError
from streamer.formats import FORMATS


def configure(p: argparse.ArgumentParser) -> None:
    """The options of `label`."""
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help=f"a recording, {AUDIO_HELP}; with --out-dir also directories and @LIST files, any number")
    p.add_argument("-f", "--format", choices=FORMATS, default="json", help="output format")
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
    g = p.add_argument_group("archives: any number of inputs, one output each")
    g.add_argument("--out-dir", metavar="DIR", help="label every input into DIR (tree mirrored, "
                   "DIR/manifest.jsonl, complete outputs skipped on a rerun)")
    x = g.add_mutually_exclusive_group()
    x.add_argument("--workers", type=int, metavar="N", help="local worker processes (default: one per core)")
    x.add_argument("--dask", metavar="ADDRESS", help="a Dask scheduler (tcp://HOST:8786), or local[:N] "
                   "for a local Dask cluster (needs the 'cluster' extra)")


def run(args: argparse.Namespace) -> int:
    """An emotion timeline of one recording in one of the output formats."""
    if args.out_dir:
        return _run_archive(args)
    if args.workers is not None or args.dask:
        raise UsageError("--workers and --dask need --out-dir")
    if len(args.inputs) != 1:
        raise UsageError("several inputs need --out-dir DIR (one output per input)")
    args.file = args.inputs[0]
    from streamer.archive import write_label
    from streamer.labelling import load_model

    meta, clf = load_model(args.model, args.window, args.hop)
    names = channel_names_arg(args)
    rules = alert_rules_arg(args)
    from streamer.sources import open_source

    if args.clips:
        from streamer.clips import check_clips_dir

        if not rules:
            raise UsageError("--clips needs alert rules (--alert or --alerts): a clip is an alert's stretch")
        check_clips_dir(args.clips, args.file)
    from streamer.outputs import atomic_open, atomic_path, check_output

    for target, what in ((args.output, "-o"), (args.summary, "--summary"), (args.plot, "--plot")):
        check_output(target, what)  # a bad target fails now, not after an hour of audio
    if args.plot:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("--plot needs matplotlib: pip install 'emostream[plot]'")
    source = open_source(args.file)  # a bad input fails before any output exists
    summary = None
    collected: list[dict[str, Any]] = []
    # Every output goes to a temporary name beside its target; all of them appear together, and
    # only once the whole recording is labelled (a failure or Ctrl-C leaves none behind).
    with contextlib.ExitStack() as outputs:
        outputs.callback(source.close)
        out = outputs.enter_context(atomic_open(args.output, what="-o"))
        if args.summary:
            from streamer.summary import Summary

            summary = Summary()

        def on_event(ev: Any) -> None:
            if summary is None and not (args.plot or args.clips):
                return
            msg = ev.to_wire()  # the summary, the plot and the clips read the wire objects
            if summary is not None:
                summary.add(msg)
            if args.plot or args.clips:
                collected.append(msg)

        # the same labelling as every file of an archive (label INPUT... --out-dir)
        res = write_label(source, out, args.format, meta, clf, channels=args.channels, channel_names=names,
                          alert_rules=rules, on_event=on_event, progress=not args.quiet)
        if summary is not None:
            with open(outputs.enter_context(atomic_path(args.summary, "--summary")), "w", encoding="utf-8") as fh:
                json.dump(summary.result(res.duration), fh, indent=2, ensure_ascii=False)
                fh.write("\n")
        if args.plot:
            from streamer.plot import plot_timeline

            plot_timeline(collected, res.duration, outputs.enter_context(atomic_path(args.plot, "--plot")),
                          meta.labels, channels=res.channel_names, source=res.source)
    warn(args, res.stats.warnings)
    if args.clips:
        from streamer.clips import alert_stretches, plan_clips, write_clips

        clips = plan_clips(alert_stretches(collected, rules or [], hop_s=meta.features.hop_s), res.duration)
        write_clips(args.file, clips, args.clips, args.clips_format)
        if not args.quiet:
            print(f"emostream: {len(clips)} review clip{'' if len(clips) == 1 else 's'} in {args.clips}",
                  file=sys.stderr)
    return 0


def _run_archive(args: argparse.Namespace) -> int:
    """Every input into --out-dir on a local pool or a Dask cluster; exit 2 if any input failed."""
    from streamer.archive import DaskBackend, LabelOptions, LocalBackend, collect_inputs, preflight, run_archive

    for opt in ("output", "summary", "plot", "clips"):
        if getattr(args, opt, None):
            raise UsageError(f"--{opt} is for one recording; with --out-dir every input gets its own output")
    if "-" in args.inputs:
        raise UsageError("- (standard input) is one recording: it cannot go with --out-dir")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    names = channel_names_arg(args)
    opts = LabelOptions(format=args.format, model=args.model, window=args.window, hop=args.hop,
                        channels=args.channels, channel_names=tuple(names) if names else None,
                        alert_rules=tuple(alert_rules_arg(args) or ()))
    jobs = collect_inputs(args.inputs, args.out_dir, args.format)
    backend = DaskBackend(args.dask) if args.dask else LocalBackend(args.workers)  # a bad address fails first
    try:
        preflight(opts)  # a model or option that cannot work fails the run here, not once per file
        totals = run_archive(jobs, args.out_dir, opts, backend, progress=False if args.quiet else None)
    finally:
        backend.close()
    if not args.quiet:
        print(f"emostream: {totals.summary()}", file=sys.stderr)
    if totals.failed:
        print(f"emostream: error: {totals.failed} of {totals.files} inputs failed (see the manifest)",
              file=sys.stderr)
        return 2
    return 0
