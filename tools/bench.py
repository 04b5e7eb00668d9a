"""Benchmarks for file labelling: speed against a naive per-window loop, real-time factor, memory, start-up.

    python -m tools.bench                    # 1 h FLAC, 10 h memory check, MP3, start-up; prints a table
    python -m tools.bench --hours 0.25 --long-hours 1 --json bench.json   # quicker

Everything runs on one CPU core (the process pins itself with sched_setaffinity) so figures compare
across machines. The test audio is the bundled example tiled to length. Timings are medians of
``--runs`` runs. The naive baseline is the seed project's way applied per window, timed in the same
run on the same file: librosa.load of the whole file, then for each window librosa.feature.mfcc and
one interpreter call (for a model with pitch channels, one librosa.stft per window feeds both
librosa's MFCC and the streamer's own pitch_from_power).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from streamer.sources import ffmpeg_exe

ROOT = Path(__file__).resolve().parent.parent

EXAMPLE = ROOT / "streamer" / "examples" / "conversation.flac"


def make_audio(path: Path, hours: float, fmt: str = "flac") -> Path:
    """Tile the bundled example to ``hours`` and write it block by block (constant memory)."""
    import soundfile as sf

    y, sr = sf.read(EXAMPLE, dtype="float32")
    total = int(hours * 3600 * sr)
    if fmt == "flac":
        with sf.SoundFile(path, "w", sr, 1, subtype="PCM_16", format="FLAC") as f:
            done = 0
            while done < total:
                n = min(len(y), total - done)
                f.write(y[:n])
                done += n
        return path
    wav = make_audio(path.with_suffix(".flac"), hours, "flac")
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(wav), "-b:a", "64k", str(path)], check=True)
    return path


# The child reports its own peak (VmHWM belongs to the process's address space, which exec
# replaces); getrusage's ru_maxrss would carry over the benchmark process's size from the fork.
_PEAK = (
    "import sys, atexit\n"
    "def _peak():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'): sys.stderr.write('PEAK_KB ' + line.split()[1] + '\\n')\n"
    "atexit.register(_peak)\n"
    "from streamer.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "sys.stdout.flush()\n"
    "_peak(); atexit.unregister(_peak)\n"
    "raise SystemExit(rc)\n"
)


def run_child(argv: list[str]) -> tuple[float, float]:
    """Run ``emostream ARGV`` in a child; return (wall seconds, the child's peak RSS in MB)."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _PEAK, *argv], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, cwd=ROOT)
    wall = time.perf_counter() - t
    err = p.stderr.decode()
    if p.returncode != 0:
        raise SystemExit(f"benchmark command failed: emostream {' '.join(argv)}\n{err}")
    peaks = [int(ln.split()[1]) for ln in err.splitlines() if ln.startswith("PEAK_KB ")]
    return wall, (peaks[-1] / 1024.0 if peaks else float("nan"))


def label_cmd(path: Path) -> list[str]:
    return ["label", str(path), "-f", "jsonl", "-o", os.devnull, "--quiet"]


def naive_loop(path: Path, max_windows: int | None = None) -> tuple[float, float]:
    """The seed's way per window: (seconds, audio seconds covered)."""
    import librosa
    import numpy as np

    from streamer.classifier import Classifier
    from streamer.config import load_meta
    from streamer.features import pitch_from_power

    meta = load_meta()
    clf = Classifier(meta=meta)
    f = meta.features
    t = time.perf_counter()
    y, sr = librosa.load(path, sr=f.sample_rate)
    win, hop = int(f.window_s * sr), int(f.hop_s * sr)
    starts = range(0, max(1, len(y) - win + 1), hop)
    if max_windows:
        starts = list(starts)[:max_windows]
    n = 0
    for s in starts:
        if f.pitch:
            # one power spectrogram per window feeds librosa's MFCC and the pitch channels (the
            # streamer's own pitch_from_power: the same algorithm, only the pipeline is naive)
            S = np.abs(librosa.stft(y[s : s + win], n_fft=f.n_fft, hop_length=f.hop_length, center=False)) ** 2
            mel = librosa.feature.melspectrogram(S=S, sr=sr, n_mels=f.n_mels)
            m = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=f.n_mfcc)
            m = np.concatenate([m, pitch_from_power(S.T.astype(np.float32), f).T])
        else:
            m = librosa.feature.mfcc(y=y[s : s + win], sr=sr, n_mfcc=f.n_mfcc, n_fft=f.n_fft,
                                     hop_length=f.hop_length, n_mels=f.n_mels, center=False)
        x = m.T[None, : f.window_frames // f.sub_window_frames * f.sub_window_frames]
        x = x.reshape(1, -1, f.sub_window_frames, f.n_channels).mean(axis=2)
        clf(x)
        n += 1
    dt = time.perf_counter() - t
    covered = len(y) / sr if not max_windows else n * f.hop_s
    return dt, covered


def label_in_process(path: Path) -> float:
    """Seconds for the same labelling inside this process (model already loaded, like the naive loop)."""
    from streamer.formats import open_writer
    from streamer.labelling import analyse, load_model

    meta, clf = load_model()
    with open(os.devnull, "w") as out:
        writer = open_writer("jsonl", out)
        t = time.perf_counter()
        res = analyse(path, meta, clf, on_header=writer.header, on_event=writer.event)
        writer.close(duration=res.duration)
        return time.perf_counter() - t


def median_child(argv: list[str], runs: int) -> tuple[float, float]:
    res = [run_child(argv) for _ in range(runs)]
    return statistics.median(r[0] for r in res), max(r[1] for r in res)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=1.0, help="length of the main test file")
    ap.add_argument("--long-hours", type=float, default=10.0, help="length for the memory check (0: skip)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--all-cores", action="store_true", help="do not pin to one core")
    args = ap.parse_args()
    if not args.all_cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # children inherit it
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="emostream-bench-") as tmp:
        tmp_p = Path(tmp)
        main_file = make_audio(tmp_p / "main.flac", args.hours)
        audio_s = args.hours * 3600

        wall, rss = median_child(label_cmd(main_file), args.runs)
        rows.append({"what": f"label {args.hours:g} h FLAC (decode+features+inference+timeline+jsonl)",
                     "seconds": wall, "x_realtime": audio_s / wall, "peak_rss_mb": rss})
        ours = wall

        inproc = statistics.median(label_in_process(main_file) for _ in range(args.runs))
        rows.append({"what": "the same labelling in this process (model loaded, no start-up)",
                     "seconds": inproc, "x_realtime": audio_s / inproc})
        naive_s, covered = naive_loop(main_file)
        rows.append({"what": "naive per-window librosa loop, same file, in this process", "seconds": naive_s,
                     "x_realtime": covered / naive_s, "ratio": naive_s / inproc})
        rows[0]["ratio"] = naive_s / ours
        rows[1]["ratio"] = naive_s / inproc

        import librosa

        t = time.perf_counter()
        y, sr = librosa.load(main_file, sr=16000)
        librosa.feature.mfcc(y=y, sr=sr, n_mfcc=40, n_fft=1024, hop_length=320, n_mels=64)
        whole = time.perf_counter() - t
        del y
        rows.append({"what": "reference: librosa.load + one librosa MFCC call over the whole file",
                     "seconds": whole, "x_realtime": audio_s / whole})

        mp3 = make_audio(tmp_p / "main.mp3", args.hours, "mp3")
        wall3, rss3 = median_child(label_cmd(mp3), args.runs)
        rows.append({"what": f"label {args.hours:g} h MP3 (64 kb/s, ffmpeg pipe)", "seconds": wall3,
                     "x_realtime": audio_s / wall3, "peak_rss_mb": rss3})

        if args.long_hours:
            long_file = make_audio(tmp_p / "long.flac", args.long_hours)
            wall_l, rss_l = run_child(label_cmd(long_file))
            rows.append({"what": f"label {args.long_hours:g} h FLAC", "seconds": wall_l,
                         "x_realtime": args.long_hours * 3600 / wall_l, "peak_rss_mb": rss_l,
                         "rss_vs_main": rss_l / rss})

        short = ROOT / "tests" / "fixtures" / "03-01-05-02-01-01-01.flac"
        cls = [sys.executable, "-m", "streamer", "classify", str(short)]
        walls = []
        for _ in range(max(3, args.runs)):
            t = time.perf_counter()
            subprocess.run(cls, check=True, capture_output=True, cwd=ROOT)
            walls.append(time.perf_counter() - t)
        rows.append({"what": "start-up: emostream classify one 4 s file (wall)", "seconds": statistics.median(walls)})

    info = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores "
                       f"({'all' if args.all_cores else 'pinned to 1'})",
            "python": platform.python_version(), "rows": rows}
    print(f"# {info['machine']}, Python {info['python']}")
    print(f"{'measurement':<75} {'s':>8} {'x RT':>8} {'ratio':>7} {'RSS MB':>7}")
    for r in rows:
        print(f"{r['what']:<75} {r['seconds']:8.2f} {r.get('x_realtime', float('nan')):8.0f} "
              f"{r.get('ratio', float('nan')):7.1f} {r.get('peak_rss_mb', float('nan')):7.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
