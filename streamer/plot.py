"""A PNG picture of an emotion timeline, and the label colours shared with the web page.

`LABEL_COLOURS` is the one source of truth for the colour of each emotion: the plot uses it and the
web page should be given it (for example injected by the server), never a copy typed by hand.
matplotlib is imported only inside `plot_timeline`, so importing the colours costs nothing.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

__all__ = ["LABEL_COLOURS", "FALLBACK_COLOURS", "label_colours", "plot_timeline"]

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


def plot_timeline(events: Iterable[dict[str, Any]], duration: float | None,
                  path: str | os.PathLike[str], labels: Sequence[str], *,
                  channels: Sequence[str] | None = None, width_px: int = 1200,
                  row_px: int = 90, dpi: int = 100, title: str | None = None) -> str:
    """Draw the timeline as a PNG: one row per channel, one coloured bar per segment.

    Silence is left blank; alerts are drawn as a black line above their stretch. The image is
    exactly ``width_px`` by ``140 + row_px * rows`` pixels.

    Args:
        events: event dicts; segments are drawn, alerts marked, windows only name channels.
        duration: the time axis runs from 0 to this (None: the latest end seen).
        path: the PNG to write.
        labels: the model's labels, in legend order.
        channels: channel names by index (default: names found in the events).
        width_px, row_px, dpi: the image's size.
        title: shown above the plot.

    Returns:
        The path written, as a string.
    """
    # A bare Figure renders PNG through Agg without touching pyplot's backend or global state,
    # so this is safe inside a server and leaves any interactive session alone.
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

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
        bars = segs.get(ch, [])
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
    if total > 120:
        ax.xaxis.set_major_formatter(FuncFormatter(_mmss))
        ax.set_xlabel("time (m:ss)")
    else:
        ax.set_xlabel("time (s)")
    ax.grid(axis="x", color="#e0e0e0", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    handles: list[Any] = [Patch(facecolor=colours[lb], label=lb) for lb in colours]
    if alerts:
        handles.append(Line2D([], [], color="black", linewidth=3, label="alert"))
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 9) or 1,
               frameon=False, fontsize="small", bbox_to_anchor=(0.5, 1.0))
    if title:
        ax.set_title(title, fontsize="small", loc="left")
    out = os.fspath(path)
    fig.savefig(out, format="png", dpi=dpi)
    return out
