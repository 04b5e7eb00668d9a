"""A PNG picture of an emotion timeline, and the label colours shared with the web page.

`LABEL_COLOURS` is the one source of truth for the colour of each emotion: the plot uses it and the
web page should be given it (for example injected by the server), never a copy typed by hand.
matplotlib is imported only inside `plot_timeline`, so importing the colours costs nothing.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

__all__ = ["LABEL_COLOURS", "FALLBACK_COLOURS", "SILENCE_COLOUR", "label_colours", "plot_timeline",
           "tick_step", "plot_title"]

# Warm and dark for negative emotions, light and cool for calm ones; distinct for colour-blind
# viewers where possible (no red/green pair carries meaning on its own: each row also has a legend).
LABEL_COLOURS: dict[str, str] = {
    "neutral": "#9e9e9e",
    "calm": "#4db6ac",
    "happy": "#fbc02d",
    "sad": "#1e88e5",
    "angry": "#e53935",
    "fearful": "#8e24aa",
    "disgust": "#6d8b1f",
    "surprised": "#fb8c00",
}

# Time without speech on a channel: the web page's silence grey.
SILENCE_COLOUR = "#e9ecef"

# Tick steps in seconds: whole seconds below a minute, whole minutes above.
_TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400)

# For labels of another model: assigned in the order the model lists its labels.
FALLBACK_COLOURS: tuple[str, ...] = (
    "#5c6bc0", "#ec407a", "#26c6da", "#8d6e63", "#d4e157", "#78909c", "#ab47bc", "#ffa726",
)


def label_colours(labels: Iterable[str]) -> dict[str, str]:
    """A colour for every label: `LABEL_COLOURS` where known, else the next fallback colour."""
    out: dict[str, str] = {}
    k = 0
    for lb in labels:
        if lb in LABEL_COLOURS:
            out[lb] = LABEL_COLOURS[lb]
        else:
            out[lb] = FALLBACK_COLOURS[k % len(FALLBACK_COLOURS)]
            k += 1
    return out


def _mmss(x: float, _pos: Any = None) -> str:
    x = max(0.0, float(x))
    h, rem = divmod(int(round(x)), 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def tick_step(total: float, max_ticks: int = 12) -> int:
    """Seconds between time ticks: the smallest round step (1, 2, 5, 10, 15, 30 s, 1, 2, 5 ... min)
    that puts at most ``max_ticks`` ticks on an axis ``total`` seconds long."""
    for step in _TICK_STEPS:
        if total / step <= max_ticks:
            return step
    return _TICK_STEPS[-1] * (int(total / (_TICK_STEPS[-1] * max_ticks)) + 1)


def plot_title(source: str | os.PathLike[str], duration: float) -> str:
    """The default title: the file's name and the recording's length (``call.wav · 1:02 (62.4 s)``)."""
    name = os.path.basename(os.fspath(source).rstrip("/\\")) or os.fspath(source)
    return f"{name} \u00b7 {_mmss(duration)} ({duration:.1f} s)"


def plot_timeline(events: Iterable[dict[str, Any]], duration: float | None,
                  path: str | os.PathLike[str], labels: Sequence[str], *,
                  channels: Sequence[str] | None = None, width_px: int = 1200,
                  row_px: int = 90, dpi: int = 100, title: str | None = None,
                  source: str | os.PathLike[str] | None = None) -> str:
    """Draw the timeline as a PNG: one row per channel, one coloured bar per segment.

    Silence (a channel's time without a segment) is drawn in the page's silence grey; alerts are
    drawn as a black line above their stretch. Time ticks fall on whole seconds or minutes
    (`tick_step`). The image is exactly ``width_px`` by ``140 + row_px * rows`` pixels.

    Args:
        events: event dicts; segments are drawn, alerts marked, windows only name channels.
        duration: the time axis runs from 0 to this (None: the latest end seen).
        path: the PNG to write.
        labels: the model's labels, in legend order.
        channels: channel names by index (default: names found in the events).
        width_px, row_px, dpi: the image's size.
        title: shown above the plot (default: `plot_title` of ``source``, when given).
        source: the recording, for the default title.

    Returns:
        The path written, as a string.
    """
    # A bare Figure renders PNG through Agg without touching pyplot's backend or global state,
    # so this is safe inside a server and leaves any interactive session alone.
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    names: dict[int, str] = {i: str(n) for i, n in enumerate(channels or [])}
    segs: dict[int, list[tuple[float, float, str]]] = {}
    alerts: dict[int, list[tuple[float, float]]] = {}
    max_end = 0.0
    for ev in events:
        kind = ev.get("type")
        if kind not in ("window", "segment", "alert"):
            continue
        ch = int(ev.get("channel", 0) or 0)
        if ev.get("channel_name") is not None:
            names.setdefault(ch, str(ev["channel_name"]))
        names.setdefault(ch, "mix" if ch == 0 else f"ch{ch + 1}")
        start = float(ev["start"])
        end = float(ev.get("end", start))
        max_end = max(max_end, end)
        if kind == "segment" and ev.get("label") is not None and end > start:
            segs.setdefault(ch, []).append((start, end, str(ev["label"])))
        elif kind == "alert":
            alerts.setdefault(ch, []).append((start, end))
    rows = sorted(names) or [0]
    total = float(duration) if duration is not None else max_end
    total = max(total, 1e-3)

    colours = label_colours(list(labels) + sorted({s[2] for v in segs.values() for s in v}
                                                  - set(labels)))
    height_px = 140 + row_px * len(rows)
    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    # Fixed margins in pixels: legend in the top 75 px (title under it), axis labels in 55 px.
    ax = fig.add_axes((90 / width_px, 55 / height_px, 1 - 110 / width_px,
                       1 - 130 / height_px))
    for r, ch in enumerate(rows):
        y = len(rows) - 1 - r  # first channel on top
        bars = sorted(segs.get(ch, []))
        quiet, t = [], 0.0   # the gaps between segments, as the page draws silence
        for a, b, _ in bars:
            if a > t:
                quiet.append((t, a - t))
            t = max(t, b)
        if t < total:
            quiet.append((t, total - t))
        if quiet:
            ax.broken_barh(quiet, (y - 0.35, 0.7), facecolors=SILENCE_COLOUR, edgecolor="none")
        if bars:
            ax.broken_barh([(a, b - a) for a, b, _ in bars], (y - 0.35, 0.7),
                           facecolors=[colours[lb] for _, _, lb in bars], edgecolor="none")
        for a, b in alerts.get(ch, []):
            ax.plot([a, max(b, a + total * 0.002)], [y + 0.42, y + 0.42], color="black",
                    linewidth=3, solid_capstyle="butt")
    ax.set_xlim(0, total)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([names.get(ch, f"ch{ch + 1}") for ch in reversed(rows)])
    step = tick_step(total)
    ax.xaxis.set_major_locator(MultipleLocator(step))
    if total > 120:
        ax.xaxis.set_major_formatter(FuncFormatter(_mmss))
        ax.set_xlabel("time (h:mm:ss)" if total >= 3600 else "time (m:ss)")
    else:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _p: f"{x:.0f}"))
        ax.set_xlabel("time (s)")
    ax.grid(axis="x", color="#e0e0e0", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    handles: list[Any] = [Patch(facecolor=colours[lb], label=lb) for lb in colours]
    handles.append(Patch(facecolor=SILENCE_COLOUR, label="silence"))
    if alerts:
        handles.append(Line2D([], [], color="black", linewidth=3, label="alert"))
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 10) or 1,
               frameon=False, fontsize="small", bbox_to_anchor=(0.5, 1.0))
    if title is None and source is not None:
        title = plot_title(source, total)
    if title:
        ax.set_title(title, fontsize="medium", loc="left")
    out = os.fspath(path)
    from streamer.outputs import atomic_path

    with atomic_path(out, what="--plot") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return out
