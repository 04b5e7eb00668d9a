"""A pull source (file, microphone) run through a pipeline in a thread, published in a stream."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from streamer.errors import EmostreamError
from streamer.server.config import PipelineLike, SourceRunner
from streamer.server.hub import Stream

__all__ = ["run_source", "watch_capture"]

log = logging.getLogger("emostream.server")


async def run_source(source: Any, pipe: PipelineLike, stream: Stream, *, realtime: bool, stop: threading.Event,
                     runner: SourceRunner | None = None, health_s: float = 5.0) -> Any:
    """Run ``runner(source, pipe, on_events, realtime=, stop=)`` in a thread until the source ends
    or ``stop`` is set; events land in ``stream`` on the event loop; the stream ends after.

    Returns:
        the runner's stats (None when it failed; the failure is sent as an ``error``).
    """
    loop = asyncio.get_running_loop()
    if runner is None:
        from streamer.pipeline import run as runner

    def on_events(events: list[Any]) -> None:
        loop.call_soon_threadsafe(stream.publish_many, list(events))

    if realtime or getattr(source, "live", False):  # audio time t arrives at start + t
        t0 = time.monotonic()
        stream.arrival = lambda t: t0 + t
    stats = None
    health = loop.create_task(watch_capture(source, stream, health_s)) if hasattr(source, "stats") else None
    try:
        stats = await asyncio.to_thread(runner, source, pipe, on_events, realtime=realtime, stop=stop)
        for w in getattr(stats, "warnings", []) or []:
            stream.error(f"warning: {w}")
        if getattr(stats, "overruns", 0):
            stream.error(f"warning: {stats.overruns} ring buffer overrun(s), "
                         f"{getattr(stats, 'dropped_frames', 0)} frames dropped")
    except EmostreamError as exc:
        log.error("source %s failed: %s", getattr(source, "uri", "?"), exc)
        stream.error(str(exc))
    finally:
        stop.set()
        if health is not None:
            health.cancel()
        try:
            source.close()
        except Exception:  # closing is best effort
            pass
        await asyncio.sleep(0)  # let queued call_soon_threadsafe batches land first
        stream.end()
    return stats


async def watch_capture(source: Any, stream: Stream, every_s: float) -> None:
    """Report a live source's lost audio (input overflows, ring overruns) in its stream.

    ``source.stats()`` (e.g. MicSource) is polled every ``every_s``; any increase goes out as an
    ``error`` message starting with ``warning:``, and ``GET /streams`` shows the totals.
    """
    keys = ("overflows", "overruns", "dropped_frames")
    last = {k: 0 for k in keys}
    while True:
        await asyncio.sleep(every_s)
        try:
            st = dict(source.stats())
        except Exception:  # a closing device: nothing to report
            continue
        stream.capture = st
        grew = {k: int(st.get(k) or 0) - last[k] for k in keys}
        if any(v > 0 for v in grew.values()):
            last = {k: int(st.get(k) or 0) for k in keys}
            stream.error(f"warning: {st.get('device', source.uri)}: audio lost in the last "
                         f"{every_s:g} s: {grew['overflows']} input overflow(s), "
                         f"{grew['overruns']} ring overrun(s), {grew['dropped_frames']} frames dropped "
                         f"(totals {last['overflows']}, {last['overruns']}, {last['dropped_frames']})")
