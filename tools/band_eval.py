"""How well the telephone-band detector (streamer/bandwidth.py) tells the cached copies apart.

Every clip of the corpora, in every augmented copy the recipe caches (clean, noisy, reverberant,
sped-up, MP3/Opus, and the 8 kHz mu-law telephone copies, all at 16 kHz), goes through a
:class:`~streamer.bandwidth.BandDetector` as a 16 kHz source would. Reports per copy the share called
telephone-band, the clips left undecided (under a second of speech), and the spread of the decision
statistic against the threshold. ``--gains -10,-20`` measures the copies again as if recorded that much quieter
(the log-mel levels lowered and held at the features' -100 dB floor, back through the DCT)::

    python -m tools.band_eval --data /work/shared/data --gains 0,-10,-20 [--json runs/band_eval.json]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from streamer.bandwidth import THRESHOLD_DB, BandDetector, band_gap
from streamer.features import _AMIN, dct_matrix
from tools.augment import is_narrowband


def quieter(feats: np.ndarray, cfg, gain_db: float) -> np.ndarray:
    """MFCC frames as if the audio were ``gain_db`` louder (log-mel shifted, floored, back to MFCCs)."""
    if gain_db == 0:
        return feats
    D = dct_matrix(cfg.n_mels, cfg.n_mfcc).astype(np.float64)
    logmel = np.maximum(feats[:, : cfg.n_mfcc] @ D.T + gain_db, 10.0 * np.log10(_AMIN))
    out = np.array(feats, dtype=np.float32)
    out[:, : cfg.n_mfcc] = logmel @ D
    return out


def measure(data, gain_db: float = 0.0) -> dict:
    """Per cached copy: clips, telephone calls, undecided, and the statistic's min / median / max."""
    cfg = data.cfg
    out = {}
    for v, name in enumerate(data.cf.versions):
        called, undecided, stats = 0, 0, []
        for i in range(len(data.items)):
            feats, speech = quieter(data.cf.mfcc(i, v), cfg, gain_db), data.speech[i][v]
            det = BandDetector(cfg)
            det.push(feats, speech)
            if det.narrowband is None:
                undecided += 1
                continue
            called += bool(det.narrowband)
            stats.append(float(band_gap(feats[np.asarray(speech, bool)][: det.frames], cfg).mean()))
        s = np.array(stats)
        out[name] = {"telephone_band": is_narrowband(name), "clips": len(data.items), "decided": len(s),
                     "called_telephone": called, "undecided": undecided,
                     "gap_db": {"min": round(float(s.min()), 1), "median": round(float(np.median(s)), 1),
                                "max": round(float(s.max()), 1)} if len(s) else None}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.band_eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="data folder (default $EMOSTREAM_DATA)")
    ap.add_argument("--model", default="default", help="training recipe whose cached copies to use")
    ap.add_argument("--gains", default="0", help="comma-separated level changes in dB (default 0)")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args(argv)
    from tools.training.data import Data, DataError
    from tools.training.recipe import recipe

    try:
        data = Data.load(args.data, recipe(args.model), log=lambda *a: None)
    except (DataError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        gains = [float(g) for g in args.gains.split(",")]
    except ValueError:
        print(f"error: --gains takes numbers in dB, not {args.gains!r}", file=sys.stderr)
        return 2
    print(f"threshold {THRESHOLD_DB:g} dB (4.3-5.6 kHz against 0.5-3 kHz, first second of speech)")
    report = {"threshold_db": THRESHOLD_DB, "gains": {}}
    for gain in gains:
        res = measure(data, gain)
        tel = [r for r in res.values() if r["telephone_band"]]
        wide = [r for r in res.values() if not r["telephone_band"]]
        summary = {"missed": sum(r["decided"] - r["called_telephone"] for r in tel),
                   "of_telephone": sum(r["decided"] for r in tel),
                   "false_alarms": sum(r["called_telephone"] for r in wide),
                   "of_wideband": sum(r["decided"] for r in wide),
                   "telephone_gap_max_db": max(r["gap_db"]["max"] for r in tel if r["gap_db"]),
                   "wideband_gap_min_db": min(r["gap_db"]["min"] for r in wide if r["gap_db"])}
        print(f"== level {gain:+g} dB")
        for name, r in res.items():
            g = r["gap_db"] or {}
            print(f"{name:14s} {'telephone' if r['telephone_band'] else 'wideband ':9s} called telephone "
                  f"{r['called_telephone']:5d} of {r['decided']:5d} (undecided {r['undecided']}); "
                  f"gap min {g.get('min')} median {g.get('median')} max {g.get('max')} dB")
        print(f"telephone copies missed: {summary['missed']} of {summary['of_telephone']} (gap at most "
              f"{summary['telephone_gap_max_db']} dB); wideband copies called telephone: {summary['false_alarms']} "
              f"of {summary['of_wideband']} (gap at least {summary['wideband_gap_min_db']} dB)")
        report["gains"][f"{gain:g}"] = {"versions": res, **summary}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
