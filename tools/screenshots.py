"""Regenerate the README's screenshots of the web page, each from a real server in headless Chromium:

* ``docs/live.png``: the live view of the bundled example conversation, mid-call (``serve --file
  --realtime``);
* ``docs/wallboard.png``: the calls wallboard with many real-time ingest calls (the harness of
  ``tools/wallboard_cpu.py``);
* ``docs/review.png``: a reviewed upload (a stereo call with an angry customer): zoomed, the
  playhead where a segment was clicked, one segment's hover text.

    python -m tools.screenshots [--only live,wallboard,review] [--calls 24] [--out docs]

Needs Chromium (EMOSTREAM_CHROMIUM, default /usr/bin/chromium) and Playwright for Python.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import soundfile as sf

from tools.wallboard_cpu import CHROMIUM, EXAMPLE, FLAGS, RATE, conversation, run_calls

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "screenshots"


class Serve:
    """`emostream serve` on a free loopback port, stopped on exit."""

    def __init__(self, *args: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen([sys.executable, "-m", "streamer", "serve", "--port", str(self.port),
                                      "--token", TOKEN, *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"emostream serve {' '.join(args)} did not start")
                time.sleep(0.2)

    def url(self, page: str = "", **query: str) -> str:
        q = "&".join(f"{k}={v}" for k, v in {"token": TOKEN, **query}.items())
        return f"http://127.0.0.1:{self.port}/{page}?{q}"

    def __enter__(self) -> "Serve":
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def live(browser, out: Path) -> None:
    with Serve("--file", str(EXAMPLE), "--realtime", "--alert", "angry,fearful>3") as srv:
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(srv.url())
        page.wait_for_function("window.emostream && window.emostream.windows >= 28", timeout=120000)
        page.wait_for_timeout(400)
        page.screenshot(path=str(out / "live.png"), clip={"x": 0, "y": 0, "width": 1280, "height": 860})
        page.close()


def wallboard(browser, out: Path, calls: int) -> None:
    with Serve("--channels", "split", "--channel-names", "agent,customer",
               "--alert", "customer:angry,fearful,disgust>8", "--idle-timeout", "120") as srv:
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(srv.url("wallboard.html"))
        page.wait_for_function("window.wallboard && window.wallboard.connection === 'live'", timeout=30000)
        done = threading.Event()
        # wideband calls (16 kHz PCM): the picture shows the model at its best, not the telephone band
        threading.Thread(target=run_calls, args=(srv.port, TOKEN, calls, 75.0, done, None, 2, 16000, "pcm_s16le"),
                         daemon=True).start()
        page.wait_for_function(f"window.wallboard.count >= {calls}", timeout=120000)
        # long enough for a few calls to have fired alerts, and for every call to be under way
        page.wait_for_timeout(25000)
        page.wait_for_function("document.querySelectorAll('[data-fresh=\"1\"]').length >= 3", timeout=120000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(out / "wallboard.png"))
        page.close()
        done.wait(120)


def review(browser, out: Path, tmp: Path) -> None:
    call = tmp / "call-review.wav"
    sf.write(call, conversation(), RATE, subtype="PCM_16")
    with Serve("--channels", "split", "--channel-names", "agent,customer",
               "--alert", "customer:angry,fearful,disgust>3") as srv:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(srv.url())
        page.set_input_files("[data-testid=upload-input]", str(call))
        page.wait_for_function("window.emostream.upload && window.emostream.upload.state === 'done'", timeout=120000)
        page.wait_for_function("window.emostream.upload.audio.readyState >= 1", timeout=30000)
        card = page.locator("[data-testid=upload-result]")
        card.scroll_into_view_if_needed()
        page.click("[data-testid=zoom-in]")
        segs = page.locator("#upload-timeline [data-testid=segment]")
        target = segs.nth(min(2, segs.count() - 1))
        target.click()
        page.wait_for_timeout(1500)
        page.evaluate("window.emostream.upload.audio.pause()")
        box = card.bounding_box()            # the page as it is (an element shot would scroll, hiding the hover)
        target.hover()
        page.wait_for_timeout(300)
        page.screenshot(path=str(out / "review.png"), clip=box)
        page.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.screenshots", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="live,wallboard,review", help="which screenshots (comma-separated)")
    ap.add_argument("--calls", type=int, default=24, help="calls on the wallboard")
    ap.add_argument("--out", default=str(ROOT / "docs"), help="folder for the PNGs")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    which = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="emostream-shots-") as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS + ["--autoplay-policy=no-user-gesture-required"])
        try:
            if "live" in which:
                live(browser, out)
            if "wallboard" in which:
                wallboard(browser, out, args.calls)
            if "review" in which:
                review(browser, out, Path(tmp))
        finally:
            browser.close()
    for name in sorted(which):
        print(out / f"{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
