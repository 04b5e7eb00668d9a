"""The web page in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

A real `emostream serve` plays a stereo recording (two fixture clips, agent and customer) in real
time; the test subscribes to the same server over a WebSocket and compares what the page draws with
the server's own messages: one row per channel, the segments with their labels, every window
(also across a dropped connection, resumed with ``since``), the alerts, the current emotion.
Then a file goes through the page's upload (file chooser and drag and drop) and is compared with
``POST /label``; and the microphone button sends Chromium's fake capture (a WAV file) through
``/ingest``. Every server here requires a token, so each test also proves that the page passes the
``?token=`` of its own address on to /ws, /label, /streams and /ingest.

Needs (Debian): chromium. Playwright for Python drives it through ``executable_path``; no browser
is downloaded. Screenshots go to the test's tmp dir; set EMOSTREAM_UPDATE_SCREENSHOT=1 to also
copy the desktop one to docs/screenshot.png.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import FIXTURES, ROOT, free_port, stop_process

AGENT = FIXTURES / "03-01-03-02-02-01-05.flac"     # happy
CUSTOMER = FIXTURES / "03-01-05-02-01-01-01.flac"  # angry
UPLOAD = FIXTURES / "03-01-04-02-01-01-02.flac"    # sad
CHROMIUM = os.environ.get("EMOSTREAM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required"]
TOKEN = "web-test-token"


def _need_browser() -> None:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install chromium (or set EMOSTREAM_CHROMIUM)",
                    pytrace=False)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("Playwright for Python is not installed: pip install playwright (no browser download "
                    "needed: the system Chromium is used)", pytrace=False)


@pytest.fixture(scope="module")
def playwright():
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright):
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield b
    b.close()


def _stereo(path: Path) -> float:
    """agent (left, a wideband headset) and customer (right, over the telephone network: nothing above
    4 kHz): the clips one after the other with pauses, 16 kHz."""
    import soxr

    a, sr = sf.read(AGENT, dtype="float32")
    c, sr2 = sf.read(CUSTOMER, dtype="float32")
    assert sr == sr2 == 16000
    c = soxr.resample(soxr.resample(c, sr, 8000, quality="HQ"), 8000, sr, quality="HQ")[: len(c)].astype(np.float32)
    pause = np.zeros(sr, np.float32)
    n = len(a) + len(c) + 3 * len(pause)
    y = np.zeros((n, 2), np.float32)
    y[sr : sr + len(a), 0] = a
    y[2 * sr + len(a) : 2 * sr + len(a) + len(c), 1] = c
    sf.write(path, y, sr, subtype="PCM_16")
    return n / sr


class Server:
    """`emostream serve` in a child process."""

    def __init__(self, tmp: Path, *args: str, port: int | None = None):
        self.port = port or free_port()
        self.log = open(tmp / f"server-{self.port}.log", "w+")
        cmd = [sys.executable, "-m", "streamer", "serve", "--port", str(self.port), "--token", TOKEN, *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.http = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.log.seek(0)
                    pytest.fail(f"server did not start:\n{self.log.read()[-3000:]}", pytrace=False)
                time.sleep(0.2)

    def page_url(self, **query: str) -> str:
        q = "&".join(f"{k}={v}" for k, v in {"token": TOKEN, **query}.items())
        return f"{self.http}/?{q}"

    def close(self) -> None:
        stop_process(self.proc)
        self.log.close()


def _messages(url: str, timeout: float = 120) -> list[dict]:
    """Every message of a stream, from its hello to its end, as the server sends them.

    (The synchronous client: Playwright's sync API keeps an event loop in this thread.)
    """
    from websockets.sync.client import connect

    out = []
    deadline = time.monotonic() + timeout
    with connect(url, max_size=None) as ws:
        while True:
            m = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            out.append(m)
            if m["type"] in ("end", "error"):
                return out


@pytest.fixture(scope="module")
def stereo_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web")
    wav = tmp / "call.wav"
    _stereo(wav)
    srv = Server(tmp, "--file", str(wav), "--realtime", "--channels", "split",
                 "--channel-names", "agent,customer", "--alert", "customer:angry,fearful,disgust>1")
    srv.tmp = tmp
    yield srv
    srv.close()


def _shot(page, tmp: Path, name: str) -> Path:
    path = tmp / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _wait(page, expr: str, timeout: float = 60) -> None:
    page.wait_for_function(expr, timeout=timeout * 1000)


@pytest.mark.browser
def test_live_timeline_matches_the_server_and_survives_a_dropped_connection(browser, stereo_server, tmp_path):
    srv = stereo_server
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(srv.page_url())
    _wait(page, "window.emostream && window.emostream.connection === 'live' && window.emostream.windows >= 2", 30)
    _shot(page, tmp_path, "live-desktop-during")
    title = page.locator("[data-testid=live-title]")
    assert title.inner_text() == "Live" and title.get_attribute("data-state") == "live"
    # a dropped connection mid-stream: the page resumes with since=<last seq> and loses nothing
    page.evaluate("window.emostream.dropConnection()")
    _wait(page, "window.emostream.reconnects >= 1 && window.emostream.connection !== 'reconnecting'", 30)
    # the reference: the server's own messages, from the start
    ref = _messages(f"{srv.ws}/ws?token={TOKEN}")
    _wait(page, "window.emostream.connection === 'ended'", 90)
    page.wait_for_timeout(300)  # one animation frame to draw the last messages

    state = page.evaluate("""() => { const s = window.emostream;
        return {windows: s.windows, segments: s.segments, alerts: s.alerts, lastSeq: s.lastSeq, gaps: s.gaps,
                channels: s.channels, reconnects: s.reconnects, errors: s.errors}; }""")
    windows = [m for m in ref if m["type"] == "window"]
    segments = [m for m in ref if m["type"] == "segment"]
    alerts = [m for m in ref if m["type"] == "alert"]
    assert ref[0]["type"] == "hello" and ref[-1]["type"] == "end"
    assert state["reconnects"] >= 1 and state["gaps"] == 0 and state["errors"] == []
    assert state["lastSeq"] == ref[-1]["seq"]
    assert state["windows"] == len(windows) and state["segments"] == len(segments) and state["alerts"] == len(alerts)
    assert state["channels"] == ["agent", "customer"]

    # one row per channel, each with its own segments, drawn in the server's order with its labels
    rows = page.locator("#live-timeline [data-testid=row]")
    assert rows.count() == 2
    assert [rows.nth(i).get_attribute("data-channel") for i in range(2)] == ["agent", "customer"]
    drawn = page.eval_on_selector_all("#live-timeline [data-testid=segment]", """els => els.map(e => [
        e.dataset.channel, e.dataset.label, Number(e.dataset.start), Number(e.dataset.end)])""")
    assert len(segments) >= 2, "the recording should give each speaker at least one segment"
    assert drawn == [[m["channel_name"], m["label"], m["start"], m["end"]] for m in segments]
    assert {m["channel_name"] for m in segments} == {"agent", "customer"}
    # segments sit inside their lane, left to right in time
    for ch in ("agent", "customer"):
        boxes = [page.locator(f"#live-timeline [data-testid=segment][data-channel={ch}]").nth(i).bounding_box()
                 for i in range(sum(1 for d in drawn if d[0] == ch))]
        assert all(b and b["width"] > 0 for b in boxes)
        assert [b["x"] for b in boxes] == sorted(b["x"] for b in boxes)
    # silence is drawn as silence: the pause before the agent speaks
    assert page.locator("#live-timeline [data-testid=silence]").count() >= 1
    # the alerts: listed, and marked on their channel's lane
    assert page.locator("[data-testid=alerts] [data-testid=alert]").count() == len(alerts)
    assert page.locator("#live-timeline [data-testid=alert-marker]").count() == len(alerts)
    listed = page.eval_on_selector_all("[data-testid=alerts] [data-testid=alert]", "els => els.map(e => e.dataset.label)")
    assert sorted(listed) == sorted(m["label"] for m in alerts)
    # the current emotion of each channel is its last window's
    for ch in ("agent", "customer"):
        last = [m for m in windows if m["channel_name"] == ch][-1]
        cur = page.locator(f"#live-now [data-testid=current][data-channel={ch}]")
        want = last["label"] if last["speech"] else ""
        assert (cur.get_attribute("data-label") or "") == want
        assert cur.locator("[data-testid=current-label]").inner_text().lower() == (want or "silence")
        # the customer's channel was heard as telephone audio, and the card says so; the agent's not
        band = cur.locator("[data-testid=current-band]")
        assert last["band"] == ("telephone" if ch == "customer" else "wideband")
        assert band.get_attribute("data-band") == last["band"]
        assert band.inner_text() == ("telephone" if ch == "customer" else "")
    assert page.locator("[data-testid=conn-state]").get_attribute("data-state") == "ended"
    # the card says the stream is over, not "Live"
    assert title.inner_text() == "Ended" and title.get_attribute("data-state") == "ended"
    # the two bands are explained on the page
    assert "segments" in page.locator("[data-testid=bands-note]").inner_text()
    assert "window" in page.locator("[data-testid=bands-note]").inner_text()
    assert errors == []

    desk = _shot(page, tmp_path, "live-desktop")
    if os.environ.get("EMOSTREAM_UPDATE_SCREENSHOT"):
        shutil.copy(desk, ROOT / "docs" / "screenshot.png")
    # a phone screen: nothing wider than the screen, the timeline still there
    phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                             has_touch=True)
    phone.goto(srv.page_url())
    _wait(phone, "window.emostream && window.emostream.connection === 'ended'", 30)
    phone.wait_for_timeout(300)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    assert phone.locator("#live-timeline [data-testid=segment]").count() == len(segments)
    _shot(phone, tmp_path, "live-phone")
    phone.close()
    page.close()


def _label_via_http(srv: Server, path: Path) -> dict:
    req = urllib.request.Request(f"{srv.http}/label?token={TOKEN}&name={path.name}", data=path.read_bytes(),
                                 method="POST", headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def _headline(res: dict) -> tuple[str | None, float]:
    """The upload's headline: the emotion with the most speech time (segments, all channels) and its
    share of the speech time."""
    secs: dict[str, float] = {}
    for s in res["segments"]:
        if s["label"]:
            secs[s["label"]] = secs.get(s["label"], 0.0) + s["end"] - s["start"]
    if not secs:
        return None, 0.0
    best = max(secs, key=secs.__getitem__)
    return best, secs[best] / sum(secs.values())


@pytest.mark.browser
def test_upload_shows_the_files_timeline_and_headline_emotion(browser, stereo_server, tmp_path):
    srv = stereo_server
    ref = _label_via_http(srv, UPLOAD)
    label, share = _headline(ref)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(srv.page_url())
    page.set_input_files("[data-testid=upload-input]", str(UPLOAD))
    page.wait_for_selector("[data-testid=upload-result]:not(.hidden)", timeout=60000)
    page.wait_for_function("window.emostream.upload && window.emostream.upload.state === 'done'")
    box = page.locator("[data-testid=upload-overall]")
    assert box.get_attribute("data-label") == (label or "")
    assert abs(float(box.get_attribute("data-share")) - share) < 1e-3
    # the number is named for what it is: a share of the speech time, not a confidence
    assert page.locator("[data-testid=upload-share]").inner_text().startswith(f"{round(share * 100)}% of the speech time")
    assert page.locator("[data-testid=upload-name]").inner_text() == UPLOAD.name
    segs = page.eval_on_selector_all("#upload-timeline [data-testid=segment]",
                                     "els => els.map(e => [e.dataset.label, Number(e.dataset.start), Number(e.dataset.end)])")
    assert segs == [[s["label"], s["start"], s["end"]] for s in ref["segments"]]
    assert len(segs) >= 1
    _shot(page, tmp_path, "upload")

    # drag and drop: the same file dropped on the drop zone gives the same result
    page.evaluate("() => { document.getElementById('upload-card').classList.add('hidden'); window.emostream.upload = null; }")
    data = list(UPLOAD.read_bytes())
    page.evaluate("""([bytes, name]) => {
        const dt = new DataTransfer();
        dt.items.add(new File([new Uint8Array(bytes)], name, {type: 'audio/flac'}));
        const zone = document.querySelector('[data-testid=drop-zone]');
        for (const t of ['dragenter', 'dragover', 'drop'])
            zone.dispatchEvent(new DragEvent(t, {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""", [data, UPLOAD.name])
    page.wait_for_function("window.emostream.upload && window.emostream.upload.state === 'done'", timeout=60000)
    assert box.get_attribute("data-label") == (label or "")

    # not audio: the server's error is shown, nothing else changes
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not a recording\n" * 20)
    page.set_input_files("[data-testid=upload-input]", str(bad))
    page.wait_for_function("window.emostream.upload && window.emostream.upload.state === 'error'", timeout=30000)
    status = page.locator("[data-testid=upload-status]")
    assert status.get_attribute("data-state") == "error"
    assert status.inner_text().startswith("notes.txt:")
    page.close()


@pytest.mark.browser
def test_page_follows_a_restarted_server(browser, tmp_path):
    """The server goes away after its file ended; a new one on the same port plays another file:
    the page notices (new source), starts over and shows the new timeline whole."""
    first = Server(tmp_path, "--file", str(AGENT))
    port = first.port
    page = browser.new_page()
    try:
        page.goto(first.page_url())
        _wait(page, "window.emostream.connection === 'ended'", 60)
        old = page.evaluate("window.emostream.windows")
        first.close()
        _wait(page, "window.emostream.connection === 'offline'", 30)
        second = Server(tmp_path, "--file", str(UPLOAD), port=port)
        try:
            ref = _messages(f"{second.ws}/ws?token={TOKEN}")
            _wait(page, "window.emostream.restarts >= 1 && window.emostream.connection === 'ended'", 60)
            page.wait_for_timeout(300)
            st = page.evaluate("({w: emostream.windows, s: emostream.segments, src: emostream.source, seq: emostream.lastSeq})")
        finally:
            second.close()
    finally:
        page.close()
    assert old > 0
    assert st["src"].endswith(UPLOAD.name) and st["seq"] == ref[-1]["seq"]
    assert st["w"] == sum(1 for m in ref if m["type"] == "window")
    assert st["s"] == sum(1 for m in ref if m["type"] == "segment")


@pytest.mark.browser
@pytest.mark.parametrize("rate", ["16k", "native"])
def test_microphone_button_streams_through_ingest(playwright, tmp_path_factory, rate):
    """Chromium's fake capture device plays a WAV; the page sends it to /ingest as 16 kHz PCM.

    ``16k``: the browser resamples (an AudioContext at 16 kHz); ``native``: the page's own
    downsampler from the context's native rate (what browsers that refuse the first get).
    """
    tmp = tmp_path_factory.mktemp("mic")
    y, sr = sf.read(CUSTOMER, dtype="float32")
    wav = tmp / "fake-mic.wav"                       # Chromium wants 16-bit PCM WAV; it loops it
    sf.write(wav, np.concatenate([y, np.zeros(sr // 2, np.float32)]), sr, subtype="PCM_16")
    srv = Server(tmp)                                # ingest only
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.closing(srv))
        b = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + [
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}"])
        stack.callback(b.close)
        page = b.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(srv.page_url(**({"mic_rate": "native"} if rate == "native" else {})))
        page.click("[data-testid=mic-button]")
        _wait(page, "window.emostream.mic.state === 'live'", 30)
        stream = page.evaluate("window.emostream.mic.stream")
        assert re.fullmatch(r"mic-[a-z0-9]+", stream)
        # a live subscriber sees the browser's stream in the server's list
        with urllib.request.urlopen(f"{srv.http}/streams?token={TOKEN}", timeout=10) as r:
            listed = json.loads(r.read())
        assert stream in json.dumps(listed)
        _wait(page, "window.emostream.mic.windows >= 3", 60)
        page.click("[data-testid=mic-button]")   # stop: the server finishes the timeline
        _wait(page, "window.emostream.mic.state === 'ended'", 30)
        page.wait_for_timeout(300)
        mic = page.evaluate("({...window.emostream.mic})")
        assert mic["sent"] > 3 * 16000
        assert (mic["sampleRate"] == 16000) == (rate == "16k"), mic
        # what the page drew is what the server says about that stream
        ref = _messages(f"{srv.ws}/ws?stream={stream}&token={TOKEN}", timeout=30)
        windows = [m for m in ref if m["type"] == "window"]
        assert ref[-1]["type"] == "end" and len(windows) == mic["windows"]
        assert page.locator("#mic-timeline [data-testid=segment]").count() == \
            sum(1 for m in ref if m["type"] == "segment")
        assert any(w["speech"] for w in windows), "the fake microphone's speech was not heard"
        # the stream carried ~16 kHz audio for as long as it ran: window ends follow the samples sent
        assert abs(windows[-1]["end"] - mic["sent"] / 16000) < 3.5
        _shot(page, tmp, f"microphone-{rate}")
        assert errors == []


@pytest.mark.browser
def test_downsampler_keeps_speech_band_and_length(browser, stereo_server):
    """The page's fallback downsampler: 48 kHz float -> 16 kHz int16, across block boundaries."""
    page = browser.new_page()
    page.goto(stereo_server.page_url())
    out = page.evaluate("""() => {
        const d = new window.emostream.Downsampler(48000, 16000), parts = [];
        const x = new Float32Array(48000);
        for (let i = 0; i < x.length; i++) x[i] = 0.5 * Math.sin(2 * Math.PI * 1000 * i / 48000);
        for (let i = 0; i < x.length; i += 1000) parts.push(...d.push(x.subarray(i, i + 1000)));
        return parts; }""")
    page.close()
    y = np.array(out, dtype=np.float64) / 32768
    assert len(y) == 16000
    t = np.arange(len(y)) / 16000
    # a 1 kHz tone keeps its frequency and amplitude (3-tap box filter at 48 kHz: gain 0.9943)
    fit = np.linalg.lstsq(np.c_[np.sin(2 * np.pi * 1000 * t), np.cos(2 * np.pi * 1000 * t)], y, rcond=None)[0]
    assert abs(np.hypot(*fit) - 0.5 * 0.9943) < 0.002
    assert np.max(np.abs(y - (fit[0] * np.sin(2 * np.pi * 1000 * t) + fit[1] * np.cos(2 * np.pi * 1000 * t)))) < 2e-3


# ---- the download buttons' renderer (no browser): the same bytes as `label -f FORMAT` ----

def test_render_result_gives_what_label_writes_in_every_format(tmp_path):
    import io

    from streamer.alerts import parse_rule
    from streamer.formats import FORMATS, open_writer
    from streamer.labelling import analyse, load_model
    from streamer.web.export import download_name, render_result

    wav = tmp_path / "call.wav"
    _stereo(wav)
    meta, clf = load_model()
    bufs = {f: io.StringIO() for f in FORMATS}
    writers = {f: open_writer(f, b) for f, b in bufs.items()}
    res = analyse(str(wav), meta, clf, channels="split", channel_names=["agent", "customer"],
                  alert_rules=[parse_rule("customer:angry,fearful,disgust>1")],
                  on_header=lambda h: [w.header(h) for w in writers.values()],
                  on_event=lambda e: [w.event(e) for w in writers.values()])
    for w in writers.values():
        w.close(duration=res.duration)
    result = json.loads(bufs["json"].getvalue())
    assert result["alerts"] and result["segments"], "the call should have segments and an alert"
    for fmt in FORMATS:
        got = render_result(result, fmt)
        if fmt == "jsonl":   # the same lines; segments come after the windows instead of between them
            assert sorted(got.splitlines()) == sorted(bufs[fmt].getvalue().splitlines())
            assert got.splitlines()[0] == bufs[fmt].getvalue().splitlines()[0]
        else:
            assert got == bufs[fmt].getvalue(), fmt
    assert download_name("/tmp/x/call.wav", "textgrid") == "call.TextGrid"
    assert download_name("my call (1).mp3", "audacity") == "my call _1_.txt"
    assert download_name(None, "vtt") == "timeline.vtt"

    from streamer.errors import InputError, UsageError

    with pytest.raises(UsageError):
        render_result(result, "docx")
    for bad in ({"windows": "no"}, [], {"segments": []}, {**result, "duration": "long"},
                {**result, "windows": [{"start": 0}]}):
        with pytest.raises(InputError):
            render_result(bad, "csv")


def test_render_endpoint_answers_downloads_with_the_label_writers(tmp_path):
    """``POST /render?format=FMT`` on a real server: the upload's result in every format, as a download."""
    from streamer.formats import EXTENSIONS, FORMATS
    from streamer.web.export import render_result

    srv = Server(tmp_path)
    try:
        res = _label_via_http(srv, UPLOAD)
        body = json.dumps(res).encode()
        for fmt in FORMATS:
            req = urllib.request.Request(f"{srv.http}/render?format={fmt}&token={TOKEN}", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as r:
                assert r.read().decode() == render_result(res, fmt)
                stem = Path(res["source"]).stem
                assert r.headers["Content-Disposition"] == f'attachment; filename="{stem}{EXTENSIONS[fmt]}"'
        for query, data in (("format=docx", body), ("format=csv", b"{not json"), ("format=csv", b'{"windows": 3}')):
            req = urllib.request.Request(f"{srv.http}/render?{query}&token={TOKEN}", data=data, method="POST")
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=60)
            assert err.value.code == 400 and json.loads(err.value.read())["error"].startswith("cannot render")
        # the token is required as everywhere else
        req = urllib.request.Request(f"{srv.http}/render?format=csv", data=body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=60)
        assert err.value.code == 401
    finally:
        srv.close()


def _tenths(t: float) -> str:
    """The page's hover times: m:ss.t."""
    whole = int(t)
    return f"{whole // 60}:{whole % 60:02d}.{int((t - whole) * 10 + 1e-6)}"


@pytest.mark.browser
def test_reviewing_an_upload_play_seek_zoom_hover_download(browser, stereo_server, tmp_path):
    """An uploaded call plays under its timeline: the playhead follows the audio, a click on a
    segment seeks there, the timeline zooms and scrolls, a segment tells its times and confidence on
    hover, and every export format downloads as the label writers render it."""
    from streamer.formats import EXTENSIONS, FORMATS
    from streamer.web.export import render_result

    wav = tmp_path / "review.wav"
    duration = _stereo(wav)
    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(stereo_server.page_url())
    page.set_input_files("[data-testid=upload-input]", str(wav))
    page.wait_for_function("window.emostream.upload && window.emostream.upload.state === 'done'", timeout=60000)
    page.wait_for_function("window.emostream.upload.audio.readyState >= 1", timeout=30000)
    result = page.evaluate("window.emostream.upload.result")
    segs = result["segments"]
    assert len(segs) >= 2 and result["channels"] == ["agent", "customer"]
    assert abs(page.evaluate("window.emostream.upload.audio.duration") - duration) < 0.05
    lane = page.locator("#upload-timeline [data-testid=lane]").first
    # the colours are the server's (the PNG plot's), not a copy in the page
    from streamer.plot import LABEL_COLOURS
    for sg in segs:
        bg = page.eval_on_selector(f"#upload-timeline [data-testid=segment][data-start='{sg['start']}']",
                                   "e => getComputedStyle(e).backgroundColor")
        c = LABEL_COLOURS[sg["label"]]
        assert bg == f"rgb({int(c[1:3], 16)}, {int(c[3:5], 16)}, {int(c[5:7], 16)})", (sg, bg)

    def head_x() -> float:
        b = page.locator("#upload-timeline [data-testid=playhead]").first.bounding_box()
        return b["x"] + b["width"] / 2

    def x_at(t: float) -> float:
        b = lane.bounding_box()
        return b["x"] + t / duration * b["width"]

    # a click on a segment seeks there and plays; the playhead moves with the audio, over every lane
    seg = segs[-1]
    node = page.locator(f"#upload-timeline [data-testid=segment][data-start='{seg['start']}']")
    node.click()
    page.wait_for_function(f"window.emostream.upload.seeks === 1 && !window.emostream.upload.audio.paused", timeout=10000)
    page.wait_for_function(f"window.emostream.upload.audio.currentTime > {seg['start'] + 0.6}", timeout=20000)
    page.evaluate("window.emostream.upload.audio.pause()")
    page.wait_for_timeout(200)
    t = page.evaluate("window.emostream.upload.audio.currentTime")
    assert seg["start"] + 0.6 < t < seg["end"] + 2
    assert abs(head_x() - x_at(t)) < 2.5
    heads = page.locator("#upload-timeline [data-testid=playhead]")
    assert heads.count() == 2 and all(heads.nth(i).is_visible() for i in range(2))
    assert page.locator("[data-testid=upload-pos]").inner_text().startswith(_tenths(t)[:-2])
    # a click on the empty part of a lane seeks to that time too
    b = lane.bounding_box()
    page.mouse.click(b["x"] + b["width"] * 0.25, b["y"] + b["height"] * 0.9)
    page.wait_for_function("window.emostream.upload.seeks === 2")
    page.evaluate("window.emostream.upload.audio.pause()")
    assert abs(page.evaluate("window.emostream.upload.audio.currentTime") - 0.25 * duration) < 0.35

    # the alerts are listed, each plays its moment (from a second before it)
    assert result["alerts"], "the server's alert rule should fire on the angry customer"
    items = page.locator("[data-testid=upload-alert]")
    assert items.count() == len(result["alerts"])
    items.first.locator("[data-testid=play-alert]").click()
    page.wait_for_function("window.emostream.upload.seeks === 3")
    page.evaluate("window.emostream.upload.audio.pause()")
    want = max(0.0, result["alerts"][0]["start"] - 1)
    assert want - 0.05 <= page.evaluate("window.emostream.upload.audio.currentTime") < want + 0.6

    # hover: label, times and confidence of the segment
    first = segs[0]
    page.locator(f"#upload-timeline [data-testid=segment][data-start='{first['start']}']").first.hover()
    tip = page.locator("[data-testid=tooltip]")
    tip.wait_for(state="visible", timeout=5000)
    text = tip.inner_text()
    assert text.startswith(first["label"]), text
    assert f"{_tenths(first['start'])}–{_tenths(first['end'])}" in text
    assert f"confidence {round(first['confidence'] * 100)}%" in text
    page.mouse.move(5, 5)
    tip.wait_for(state="hidden", timeout=5000)

    # zoom: 4x wider, scrollable, segments 4x wider, channel names stay in sight
    scroller = page.locator("#upload-timeline [data-testid=timeline-scroll]")
    w1, l1 = node.bounding_box()["width"], lane.bounding_box()["width"]
    page.click("[data-testid=zoom-in]")
    page.click("[data-testid=zoom-in]")
    assert page.locator("[data-testid=zoom-level]").inner_text() == "4×"
    sw, cw = scroller.evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert 3.9 * cw < sw < 4.1 * cw
    l4 = lane.bounding_box()["width"]
    assert l4 > 4 * l1 and abs(node.bounding_box()["width"] / w1 - l4 / l1) < 0.02    # drawn to the wider scale
    scroller.evaluate("e => { e.scrollLeft = e.scrollWidth; }")
    page.wait_for_timeout(100)
    sbox, nbox = scroller.bounding_box(), node.bounding_box()
    assert sbox["x"] <= nbox["x"] + nbox["width"] <= sbox["x"] + sbox["width"] + 1   # the last segment in view
    name = page.locator("#upload-timeline .rname").first.bounding_box()
    assert abs(name["x"] - sbox["x"]) < 2                                               # sticky row names
    assert page.locator("#upload-timeline [data-testid=axis] span").count() >= 8       # finer ticks
    page.click("[data-testid=zoom-fit]")
    assert scroller.evaluate("e => e.scrollWidth <= e.clientWidth + 1")

    # downloads: every format, as `label -f FORMAT` writes it
    for fmt in FORMATS:
        with page.expect_download(timeout=30000) as dl:
            page.click(f"[data-testid=download][data-format={fmt}]")
        d = dl.value
        assert d.suggested_filename == f"review{EXTENSIONS[fmt]}"
        assert Path(d.path()).read_text(encoding="utf-8") == render_result(result, fmt), fmt
    _shot(page, tmp_path, "review")
    assert errors == []
    page.close()


def _send(srv: Server, path: Path, stream: str, log: Path) -> subprocess.Popen:
    """A real ingest client: `emostream send --realtime` (its own process)."""
    return subprocess.Popen([sys.executable, "-m", "streamer", "send", str(path),
                             f"{srv.ws}/ingest?stream={stream}&token={TOKEN}", "--realtime", "--quiet"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def _negative_share(windows: list[dict], channel: int) -> float | None:
    """The wallboard's bar: negative speech windows among the speech windows of the last minute."""
    mine = [w for w in windows if w["channel"] == channel]
    if not mine:
        return None
    last = [w for w in mine if w["end"] > mine[-1]["end"] - 60 and w["speech"] and w["label"]]
    if not last:
        return None
    return sum(w["label"] in ("angry", "fearful", "sad", "disgust") for w in last) / len(last)


@pytest.mark.browser
def test_wallboard_shows_every_call_from_one_feed(browser, tmp_path):
    """Four real ingest calls (two with an angry customer, 3 s apart): one card each, from one
    WebSocket; each channel's current emotion, negative share and alert count are the server's; calls
    sorted by the most recent alert, fresh alerts highlighted, "ended" at the end; a click opens the
    call's live view; a dropped feed comes back with the same board."""
    calls = {"angry-1": CUSTOMER, "calm-1": AGENT, "angry-2": CUSTOMER, "sad-1": UPLOAD}
    files = {}
    import soxr

    for sid, clip in calls.items():
        y, sr = sf.read(clip, dtype="float32")
        if sid == "sad-1":  # this customer calls over the telephone network: nothing above 4 kHz
            y = soxr.resample(soxr.resample(y, sr, 8000, quality="HQ"), 8000, sr, quality="HQ")[: len(y)]
        st = np.zeros((len(y) + 2 * sr, 2), np.float32)
        st[sr // 2: sr // 2 + len(y), 1] = y                     # the customer speaks, the agent listens
        st[sr // 2: sr // 2 + len(y), 0] = 0.05 * y[::-1]      # and murmurs (not silence)
        files[sid] = tmp_path / f"{sid}.wav"
        sf.write(files[sid], st, sr, subtype="PCM_16")
    srv = Server(tmp_path, "--channels", "split", "--channel-names", "agent,customer",
                 "--alert", "customer:angry,fearful,disgust>1")
    senders: list[subprocess.Popen] = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        sockets: list[str] = []
        page.on("websocket", lambda w: sockets.append(w.url))
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        # the wallboard is linked from the live page's header (the token goes along)
        page.goto(srv.page_url())
        page.click("[data-testid=wallboard-link]")
        page.wait_for_url(f"{srv.http}/wallboard.html?token={TOKEN}", timeout=10000)
        _wait(page, "window.wallboard && window.wallboard.connection === 'live'", 30)
        assert page.locator("[data-testid=empty]").is_visible()
        for sid in ("angry-1", "calm-1", "sad-1"):
            senders.append(_send(srv, files[sid], sid, tmp_path / f"{sid}.log"))
        time.sleep(3)
        senders.append(_send(srv, files["angry-2"], "angry-2", tmp_path / "angry-2.log"))
        _wait(page, "window.wallboard.count === 4", 60)
        _wait(page, "document.querySelectorAll('[data-testid=call][data-state=live]').length >= 1", 30)
        _shot(page, tmp_path, "wallboard-live")
        for p in senders:
            assert p.wait(120) == 0
        _wait(page, "document.querySelectorAll('[data-testid=call][data-state=ended]').length === 4", 60)
        page.wait_for_timeout(700)                                   # one more redraw
        feeds = [u for u in sockets if "streams=all" in u]
        # one connection for every call, none per call (the others are the live page's, before the click)
        assert len(feeds) == 1 and not any(re.search(r"[?&]stream=", u) for u in sockets)

        # (read first: an alert stays "fresh" for 30 s)
        fresh = {sid: page.locator(f"[data-testid=call][data-stream='{sid}']").get_attribute("data-fresh")
                 for sid in calls}
        alerting = page.locator("[data-testid=alerting-count]").inner_text()
        order = page.evaluate("window.wallboard.order()")
        # the most recent alert first: angry-2 started 3 s after angry-1; calls without alerts after
        assert order[:2] == ["angry-2", "angry-1"] and set(order[2:]) == {"calm-1", "sad-1"}
        for sid in calls:
            ref = _messages(f"{srv.ws}/ws?stream={sid}&token={TOKEN}", timeout=30)
            windows = [m for m in ref if m["type"] == "window"]
            alerts = [m for m in ref if m["type"] == "alert"]
            card = page.locator(f"[data-testid=call][data-stream='{sid}']")
            assert card.get_attribute("data-state") == "ended"
            assert card.locator("[data-testid=call-state]").inner_text().lower() == "ended"
            assert int(card.get_attribute("data-alerts")) == len(alerts)
            assert fresh[sid] == ("1" if alerts else "0")
            assert (len(alerts) > 0) == sid.startswith("angry")
            for ch, name in enumerate(["agent", "customer"]):
                last = [w for w in windows if w["channel"] == ch][-1]
                row = card.locator(f"[data-testid=call-channel][data-channel={name}]")
                want = last["label"] if last["speech"] else ""
                assert (row.get_attribute("data-label") or "") == want
                # the band the channel was heard in, as its last window says; "tel" marks telephone audio
                assert (row.get_attribute("data-band") or "") == last.get("band", "")
                assert row.locator("[data-testid=call-band]").inner_text().strip() == \
                    ("tel" if last.get("band") == "telephone" else "")
                if sid == "sad-1" and name == "customer":
                    assert last["band"] == "telephone"
                    # the mark is drawn whole inside the row's name cell (a cut-off name is fine)
                    mark = row.locator("[data-testid=call-band]").bounding_box()
                    cell = row.locator(".cn").bounding_box()
                    assert mark and cell and mark["width"] > 0
                    assert cell["x"] <= mark["x"] and mark["x"] + mark["width"] <= cell["x"] + cell["width"] + 0.5
                if want:
                    assert row.locator("[data-testid=call-confidence]").inner_text() == \
                        f"{round(last['confidence'] * 100)}%"
                share = _negative_share(windows, ch)
                got = row.locator("[data-testid=neg-bar]").get_attribute("data-share")
                assert got == ("" if share is None else f"{share:.2f}"), (sid, name)
            if alerts:
                assert card.locator("[data-testid=last-alert]").inner_text().lower().startswith(alerts[-1]["label"])
        assert alerting == "2"
        # the newest alerts of all calls, newest first, above the grid
        listed = page.eval_on_selector_all("[data-testid=latest-alert]", "els => els.map(e => e.dataset.stream)")
        assert listed[0] == "angry-2" and sorted(set(listed)) == ["angry-1", "angry-2"]
        _shot(page, tmp_path, "wallboard-ended")

        # a dropped feed: the board reconnects (one more socket) and keeps its ended calls
        page.evaluate("window.wallboard.dropConnection()")
        _wait(page, "window.wallboard.reconnects >= 1 && window.wallboard.connection === 'live'", 30)
        assert page.evaluate("window.wallboard.count") == 4
        assert len([u for u in sockets if "streams=all" in u]) == 2

        # a click opens the call's live view
        page.locator("[data-testid=call][data-stream='angry-2']").click()
        page.wait_for_url(re.compile(r".*/\?.*stream=angry-2"), timeout=10000)
        _wait(page, "window.emostream && window.emostream.connection === 'ended'", 30)
        assert page.evaluate("window.emostream.stream") == "angry-2"
        assert page.evaluate("window.emostream.alerts") >= 1
        assert errors == []
    finally:
        for p in senders:
            stop_process(p)
        page.close()
        srv.close()


@pytest.mark.browser
def test_wallboard_opened_mid_call_starts_from_the_servers_list(browser, tmp_path):
    """A board opened while a call runs gets the call's alert count, newest alert and current emotion
    from the feed's first ``streams`` message, then follows it live."""
    from websockets.sync.client import connect

    y, sr = sf.read(CUSTOMER, dtype="float32")
    call = tmp_path / "call.wav"
    sf.write(call, np.concatenate([y, y, y, np.zeros(sr, np.float32)]), sr, subtype="PCM_16")
    srv = Server(tmp_path, "--alert", "angry,fearful,disgust>1")
    sender = _send(srv, call, "long-call", tmp_path / "send.log")
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        deadline = time.monotonic() + 60
        while "long-call" not in json.dumps(json.loads(urllib.request.urlopen(
                f"{srv.http}/streams?token={TOKEN}", timeout=10).read())):
            assert time.monotonic() < deadline and sender.poll() is None, "the call did not start"
            time.sleep(0.1)
        with connect(f"{srv.ws}/ws?stream=long-call&token={TOKEN}", open_timeout=30) as ws:
            deadline = time.monotonic() + 60
            while json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))["type"] != "alert":
                pass
        page.goto(f"{srv.http}/wallboard.html?token={TOKEN}")
        _wait(page, "window.wallboard && window.wallboard.count === 1", 30)
        card = page.locator("[data-testid=call][data-stream='long-call']")
        assert card.get_attribute("data-state") == "live"
        assert int(card.get_attribute("data-alerts")) >= 1
        assert page.eval_on_selector_all("[data-testid=latest-alert]", "els => els.map(e => e.dataset.stream)") \
            == ["long-call"]
        assert card.locator("[data-testid=call-channel]").count() == 1
        assert sender.wait(120) == 0
        _wait(page, "document.querySelector(\"[data-testid=call][data-stream='long-call']\").dataset.state === 'ended'", 30)
        ref = _messages(f"{srv.ws}/ws?stream=long-call&token={TOKEN}", timeout=30)
        assert int(card.get_attribute("data-alerts")) == sum(m["type"] == "alert" for m in ref)
    finally:
        stop_process(sender)
        page.close()
        srv.close()
