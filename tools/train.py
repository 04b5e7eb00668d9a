"""Train, cross-validate and ship emostream's models (run from the repository root).

    python -m tools.train --data DIR --model default                 # final fit -> model/emotion.tflite/.json
    python -m tools.train --data DIR --model default --cv            # 5-fold actor-grouped CV on RAVDESS 01-20
    python -m tools.train --data DIR --model default --cv emodb --corpora emodb   # speaker-grouped CV on EmoDB
    python -m tools.train --data DIR --model default --cross ravdess:emodb        # train on one corpus, test the other
    python -m tools.train --data DIR --model seed [--cv | --random-split]

DIR holds the corpora (ravdess-speech-16k/, emodb-16k/); without --data, $EMOSTREAM_DATA. Every
protocol scores clips as ``emostream classify`` does (16 kHz, 8 kHz mu-law, MP3/Opus, per-speaker
streams) and continuous streams of the held-out speakers through the streamer's pipeline
(tools/continuous.py). The work is in the tools.training package.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tools.datasets import LABELS, DataError
from tools.training.data import Data
from tools.training.export import FitOptions, final_fit, refresh_meta
from tools.training.protocols import CVOptions, run_cross_corpus, run_cv, run_random_split
from tools.training.recipe import PRESETS, RecipeError, recipe
from tools.training.reports import plot_confusion

__all__ = ["main", "parser", "LABELS"]

ROOT = Path(__file__).resolve().parent.parent


def parser() -> argparse.ArgumentParser:
    """The command's options (recipe overrides default to the preset's values)."""
    ap = argparse.ArgumentParser(prog="python -m tools.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(PRESETS), default="default", help="the recipe preset")
    ap.add_argument("--data", default=None, help="folder holding the corpora (default: $EMOSTREAM_DATA)")
    ap.add_argument("--corpora", default=None, help="corpora to train on, e.g. ravdess,emodb (recipe's default)")
    what = ap.add_mutually_exclusive_group()
    what.add_argument("--cv", nargs="?", const="ravdess", default=None, metavar="CORPUS",
                      help="speaker-grouped CV on CORPUS (default ravdess) instead of the final fit")
    what.add_argument("--cross", default=None, metavar="TRAIN:TEST", help="cross-corpus: train on one, test on the other")
    what.add_argument("--random-split", action="store_true", help="the seed's random file split (inflated)")
    what.add_argument("--refresh-meta", action="store_true",
                      help="only rewrite the evaluation block of the shipped metadata from the CV reports "
                           "(with --narrowband-prior model: add the telephone prior computed from the data to networks trained without it)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=None, help="ensemble size of the final fit (recipe's default)")
    ap.add_argument("--seeds-cv", type=int, default=1, help="models averaged per CV fold")
    ap.add_argument("--no-continuous", action="store_true", help="CV: skip the continuous-speech streams")
    ap.add_argument("--no-curve", action="store_true", help="CV: skip the epoch curve (faster)")
    ap.add_argument("--folds", type=lambda t: [int(x) for x in t.split(",")], default=None,
                    help="CV: only these folds (1-based, e.g. 1,2), paired with a full run's same folds")
    ap.add_argument("--eval-hops", type=lambda t: [float(x) for x in t.split(",")], default=None,
                    help="CV: also score clean and 8 kHz clips with windows this many seconds apart (e.g. 0.5,0.2)")
    ap.add_argument("--save-probs", default=None,
                    help="CV: save every model's clip probabilities to this .npz (tools/cv_members.py merges runs)")
    ap.add_argument("--out", default=str(ROOT / "model"))
    ap.add_argument("--reports", default=str(ROOT / "model" / "reports"))
    ap.add_argument("--tag", default="", help="suffix for the report name (variants)")
    ap.add_argument("--cache", default=None, help="feature cache folder (default cache/ or $EMOSTREAM_CACHE)")
    ap.add_argument("--quant", choices=["dynamic", "none"], default="dynamic")
    ap.add_argument("--version", default="1.0.0")
    ap.add_argument("--threads", type=int, default=1)
    r = ap.add_argument_group("recipe overrides")
    r.add_argument("--epochs", type=int)
    r.add_argument("--n-mfcc", type=int)
    r.add_argument("--n-mels", type=int)
    r.add_argument("--n-fft", type=int)
    r.add_argument("--window-s", type=float)
    r.add_argument("--hop-s", type=float)
    r.add_argument("--pitch", action=argparse.BooleanOptionalAction, default=None,
                   help="log-f0 and voicing channels after the MFCCs (--no-pitch: the MFCCs alone, as up to 1.3.0)")
    r.add_argument("--views", default=None, help="channels each seed's networks read: all, mfcc (e.g. all,mfcc)")
    r.add_argument("--no-early-stop", action="store_true", help="train the fixed epoch count without early stopping")
    r.add_argument("--prior-frames", type=float, help="weight of the prior in the running normaliser")
    r.add_argument("--prior-frames-shape", type=float,
                   help="prior weight of the spectral-shape bands (MFCC c1 and up) in the running normaliser")
    r.add_argument("--context", type=float, help="probability of streaming the speaker's other clips first")
    r.add_argument("--versions", default=None,
                   help="comma-separated augmented copies drawn per epoch (tools/augment.py's VERSIONS)")
    r.add_argument("--norm", choices=["running", "running_mean", "fixed", "none"])
    r.add_argument("--blocks", default=None, help="Conv1D blocks as filters:kernel,... (e.g. 96:5,128:5,128:3,160:3)")
    r.add_argument("--dense", type=int)
    r.add_argument("--label-smoothing", type=float)
    r.add_argument("--mixup", type=float, help="mixup of training windows, Beta(a, a)")
    r.add_argument("--weight-decay", type=float, help="AdamW's decoupled weight decay")
    r.add_argument("--pool", choices=["avgmax", "attention"])
    r.add_argument("--swa", type=float, help="average the weights of the last fraction of epochs")
    r.add_argument("--straddle", type=float, help="share of training windows straddling two utterances")
    r.add_argument("--corpus-labels", nargs="?", const="all", default=None, metavar="LABELS",
                   help="labels (comma-separated; alone: all) a clip's loss leaves out where its corpus lacks "
                        "them and another training corpus has them")
    r.add_argument("--corpus-label-weight", type=float, metavar="W",
                   help="the weight (0-1) --corpus-labels' left-out labels keep in those clips' loss "
                        "(0: left out; e.g. 0.3: a softer 'not calm')")
    r.add_argument("--class-weight", choices=["none", "corpus", "ravdess", "emodb"],
                   help="corpus: weight each clip's loss so every label of its corpus weighs the same; "
                        "a corpus's name: balance that corpus's labels only")
    r.add_argument("--class-weight-power", type=float, metavar="P",
                   help="balance part of the way: each --class-weight weight raised to P (0-1; 1: fully)")
    r.add_argument("--label-weight", default=None, metavar="CORPUS:LABEL=W,...",
                   help="that corpus's clips of that label weigh W in the loss (times --class-weight's), "
                        "e.g. emodb:sad=0.3")
    r.add_argument("--heads", choices=["one", "corpus"],
                   help="corpus: one output layer per training corpus on a shared trunk, each clip's loss on "
                        "its own corpus's layer; the model ships their mix (--head-weights)")
    r.add_argument("--head-weights", default=None, metavar="CORPUS=W,...",
                   help="with --heads corpus: the shipped probabilities mix the heads with these weights "
                        "(corpora not named: 0), e.g. ravdess=1 or ravdess=0.7,emodb=0.3; default: alike")
    r.add_argument("--split-labels", default=None, metavar="CORPUS:LABEL,...",
                   help="that corpus's clips of that label (or CORPUS:all: of every label) train an output of "
                        "their own, added to the label's in the shipped model, e.g. emodb:sad")
    r.add_argument("--adversary", choices=["none", "speaker", "speaker_all", "corpus"],
                   help="an adversary learns the training clips' speakers (speaker: within each corpus; "
                        "speaker_all: among all) or corpora from the last hidden layer; its gradient reaches "
                        "the network reversed (not part of the shipped model)")
    r.add_argument("--adversary-weight", type=float, metavar="W",
                   help="the reversed gradient's scale (default 0.1)")
    r.add_argument("--adversary-corpora", default=None, metavar="CORPUS,...",
                   help="the corpora whose clips the adversary learns from (default: all), e.g. ravdess")
    r.add_argument("--narrowband-prior", choices=["none", "model", "train"],
                   help="a prior for telephone-band sources from the telephone copies: model (the model "
                        "carries it) or train (training's telephone copies start from it too)")
    r.add_argument("--mask-t", type=int, help="longest time mask (frames)")
    r.add_argument("--mask-c", type=int, help="longest coefficient mask")
    r.add_argument("--lr", type=float)
    r.add_argument("--std-pool", action="store_true", help="one normalisation spread for all coefficients")
    r.add_argument("--mask-domain", choices=["coefficients", "mel"])
    r.add_argument("--batch", type=int)
    return ap


def _overrides(args: argparse.Namespace) -> dict:
    over = dict(epochs=args.epochs, n_mfcc=args.n_mfcc, n_mels=args.n_mels, n_fft=args.n_fft, window_s=args.window_s,
                hop_s=args.hop_s, pitch=args.pitch, prior_frames=args.prior_frames,
                prior_frames_shape=args.prior_frames_shape, context=args.context, norm=args.norm, dense=args.dense, label_smoothing=args.label_smoothing, mask_t=args.mask_t,
                mask_c=args.mask_c, lr=args.lr, batch=args.batch, std_pool=args.std_pool or None,
                mask_domain=args.mask_domain, mixup=args.mixup, swa=args.swa, straddle=args.straddle, corpus_labels=args.corpus_labels.split(",") if args.corpus_labels else None,
                weight_decay=args.weight_decay, pool=args.pool, narrowband_prior=args.narrowband_prior,
                class_weight=args.class_weight, corpus_label_weight=args.corpus_label_weight,
                class_weight_power=args.class_weight_power,
                label_weights=args.label_weight.split(",") if args.label_weight else None,
                split_labels=args.split_labels.split(",") if args.split_labels else None, heads=args.heads,
                head_weights=args.head_weights.split(",") if args.head_weights else None,
                adversary=args.adversary, adversary_weight=args.adversary_weight,
                adversary_corpora=args.adversary_corpora.split(",") if args.adversary_corpora else None)
    if args.blocks:
        over["blocks"] = [tuple(int(v) for v in b.split(":")) for b in args.blocks.split(",")]
    if args.versions:
        over["train_versions"] = args.versions.split(",")
    if args.no_early_stop:
        over["early_stopping"] = False
    if args.views:
        over["views"] = args.views.split(",")
    if args.corpora:
        over["corpora"] = args.corpora.split(",")
    return over


def run(args: argparse.Namespace, argv: list[str], log=print) -> int:
    """Do what the options ask; raises DataError/RecipeError/ValueError for bad input."""
    rcp = recipe(args.model, **_overrides(args))
    if args.refresh_meta:
        # a narrowband prior the networks did not train with is computed from the clips, not read from a report
        data = (Data.load(args.data, rcp, cache_dir=args.cache, log=log)
                if rcp.narrowband_prior == "model" else None)
        refresh_meta(rcp, args.out, args.reports, log=log, data=data)
        return 0
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already ran in this process (a second call): its threads stay
        log(f"TensorFlow is already initialised; --threads {args.threads} not applied")
    cmd = "python -m tools.train " + " ".join(argv)
    t0 = time.time()
    corpora = list(rcp.corpora)
    cross = None
    if args.cross:
        cross = args.cross.split(":")
        if len(cross) != 2 or cross[0] == cross[1]:
            raise ValueError(f"--cross takes TRAIN:TEST, two different corpora, not {args.cross!r}")
        corpora = cross
    elif args.cv and args.cv not in corpora:
        corpora.append(args.cv)
    data = Data.load(args.data, rcp, tuple(corpora), cache_dir=args.cache, log=log)
    log(f"{len(data.items)} clips ({', '.join(corpora)}), features ready in {time.time() - t0:.0f} s")
    reports = Path(args.reports)
    reports.mkdir(parents=True, exist_ok=True)
    name = rcp.name + (f"_{args.tag}" if args.tag else "")
    opts = CVOptions(seed=args.seed, seeds_cv=args.seeds_cv, eval_hops=args.eval_hops or [],
                     continuous=not args.no_continuous, save_probs=args.save_probs,
                     curve=not args.no_curve, folds=args.folds)
    if args.cv or cross or args.random_split:
        if cross:
            path = reports / f"cv_{name}__cross_{cross[0]}_{cross[1]}.json"
        elif args.cv and args.cv != "ravdess":
            path = reports / f"cv_{name}__cv_{args.cv}.json"
        else:
            path = reports / f"cv_{name}.json"
        res = json.loads(path.read_text()) if path.exists() else {}
        about = dict(command=cmd, seeds_cv=args.seeds_cv, recipe=rcp.to_json())
        # a long CV writes its figures so far after every fold (marked "partial")
        opts.checkpoint = lambda part: path.write_text(json.dumps({**res, **part, **about}, indent=1) + "\n")
        if args.random_split:
            key = "random_split" if rcp.early_stopping or rcp.name != "seed" else "random_split_fixed_epochs"
            res[key] = run_random_split(data, rcp, args.seed, log=log)
            res[key]["command"] = cmd
        else:
            res.update(run_cross_corpus(data, rcp, cross[0], cross[1], opts, log=log) if cross
                       else run_cv(data, rcp, opts, corpus=args.cv, log=log))
            res.pop("partial", None)
            res.update(about, seconds=round(time.time() - t0))
            for v, key in (("16 kHz", "clean_16k"), ("8 kHz mu-law", "mulaw_8k")):
                r = res[key]
                plot_confusion(r["confusion"], f"{name}: {v}, acc {r['accuracy']:.3f}, macro-F1 {r['macro_f1']:.3f}",
                               reports / f"confusion_{path.stem[3:]}_{key}.png")
            log(json.dumps({k: res[k]["accuracy"] for k in ("clean_16k", "mulaw_8k")}
                           | {k: res[k].get("speaker_timeline") for k in ("continuous_16k", "continuous_mulaw_8k")
                              if k in res}))
        path.write_text(json.dumps(res, indent=1) + "\n")
        log(f"wrote {path} ({time.time() - t0:.0f} s)")
        return 0
    final_fit(data, rcp, FitOptions(out=args.out, reports=args.reports, version=args.version, seed=args.seed,
                                    seeds=args.seeds, quant=args.quant, command=cmd), log=log)
    log(f"done in {time.time() - t0:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command: one line ``train: error: ...`` and exit status 2 for bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    try:
        return run(args, argv, log=lambda m: print(m, flush=True))
    except (DataError, RecipeError, ValueError) as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
