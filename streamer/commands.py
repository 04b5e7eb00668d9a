"""The file commands: classify, label, info."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from streamer.errors import EmostreamError, UsageError

__all__ = ["cmd_classify", "cmd_label", "cmd_info", "channel_names_arg", "alert_rules_arg"]


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
    """Alert rules from --alert and --alerts."""
    specs = getattr(args, "alert", None) or []
    path = getattr(args, "alerts", None)
    if not specs and not path:
        return None
    from streamer.alerts import load_rules, parse_rule

    rules = [parse_rule(s) for s in specs]
    if path:
        rules.extend(load_rules(path))
    return rules


def _warn(args: argparse.Namespace, messages: list[str]) -> None:
    if not getattr(args, "quiet", False):
        for m in messages:
            print(f"emostream: warning: {m}", file=sys.stderr)


def cmd_classify(args: argparse.Namespace) -> int:
    """One label per file: the mean of the speech windows' probabilities."""
    from streamer.labelling import analyse, load_model, overall

    meta, clf = load_model(args.model)
    names = channel_names_arg(args)
    status = 0
    for path in args.files:
        try:
            res = analyse(path, meta, clf, channels=args.channels, channel_names=names)
        except EmostreamError as exc:
            print(f"emostream: error: {exc}", file=sys.stderr)
            status = status or exc.exit_code
            continue
        _warn(args, res.stats.warnings)
        chans: list[tuple[int | None, str | None]] = [(None, None)] if args.channels == "mix" else \
            list(enumerate(res.channel_names))
        for ch, name in chans:
            label, conf, probs = overall(res, meta.labels, ch)
            if label is None:
                _warn(args, [f"{path}: no speech found" + (f" on channel {name}" if name else "")])
            if args.json:
                obj: dict[str, Any] = {"path": path, "label": label, "confidence": round(conf, 4), "probs": probs}
                if name is not None:
                    obj["channel"] = ch
                    obj["channel_name"] = name
                print(json.dumps(obj), flush=True)
            else:
                cols = [path] + ([name] if name is not None else []) + [label or "none", f"{conf:.3f}"]
                print("\t".join(cols), flush=True)
    return status


def cmd_label(args: argparse.Namespace) -> int:
    """An emotion timeline of one recording in one of the output formats."""
    from streamer.formats import open_writer
    from streamer.labelling import analyse, load_model

    meta, clf = load_model(args.model, args.window, args.hop)
    names = channel_names_arg(args)
    rules = alert_rules_arg(args)
    from streamer.sources import open_source

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
            if args.plot:
                collected.append(ev)

        res = analyse(source, meta, clf, channels=args.channels, channel_names=names, alert_rules=rules,
                      on_header=writer.header, on_event=on_event, progress=not args.quiet)
        writer.close(duration=res.duration)
    finally:
        if args.output:
            out.close()
        else:
            sys.stdout.flush()
    _warn(args, res.stats.warnings)
    if summary is not None:
        with open(args.summary, "w", encoding="utf-8") as fh:
            json.dump(summary.result(res.duration), fh, indent=2)
            fh.write("\n")
    if args.plot:
        from streamer.plot import plot_timeline

        plot_timeline(collected, res.duration, args.plot, meta.labels)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Model, labels, feature parameters and the TFLite runtime in use."""
    from dataclasses import asdict

    from streamer.classifier import runtime_name
    from streamer.config import load_meta

    meta = load_meta(args.model)
    info = {
        "model": str(meta.model_path),
        "name": meta.name,
        "version": meta.version,
        "labels": meta.labels,
        "features": asdict(meta.features),
        "window_frames": meta.features.window_frames,
        "normalisation": meta.normalisation.kind,
        "gate": asdict(meta.gate),
        "runtime": runtime_name(),
        "evaluation": meta.extra.get("evaluation"),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"model      {info['model']}")
    print(f"name       {meta.name} {meta.version}")
    print(f"labels     {', '.join(meta.labels)}")
    f = meta.features
    print(f"features   {f.n_mfcc} MFCC of {f.n_mels} mels{' + log-f0, voicing' if f.pitch else ''}, {f.sample_rate} Hz, frame {f.n_fft}, hop {f.hop_length}, "
          f"{f.sub_window_frames}-frame means, window {f.window_s} s every {f.hop_s} s")
    print(f"normalise  {meta.normalisation.kind}")
    print(f"runtime    {info['runtime']}")
    ev = meta.extra.get("evaluation")
    if isinstance(ev, dict):
        for k, v in ev.items():
            if isinstance(v, (int, float, str)):
                print(f"eval       {k}: {v}")
            elif isinstance(v, dict) and "accuracy" in v:  # a test condition: its headline figures
                f1 = f", macro-F1 {v['macro_f1']}" if "macro_f1" in v else ""
                print(f"eval       {k}: accuracy {v['accuracy']}{f1}")
    return 0
