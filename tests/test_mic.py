"""The microphone path through real PortAudio, on a machine without a sound card.

Two capture devices that need no hardware, each configured by the test in a temporary directory
and selected by name through PortAudio (sounddevice), exactly as `--device NAME` does:

* ALSA's ``file`` plugin over the ``null`` plugin, whose ``infile`` is the raw float32 samples of a
  known WAV clip. The null plugin has no clock, so this "microphone" delivers audio as fast as the
  CPU allows: it proves bit-exact transport (PortAudio -> callback -> ring -> read) and that an
  outrun reader is reported as overruns, not real-time behaviour.
* A PulseAudio null sink's monitor (a private ``pulseaudio`` daemon started by the test), through
  ALSA's ``pulse`` plugin. It is paced by PulseAudio's clock like a real microphone; the clip is
  played into the sink with ``paplay`` and the live pipeline's timeline is checked.

The audio runs in a child process: PortAudio reads the ALSA configuration once, when sounddevice
is imported, so the test's ALSA_CONFIG_PATH must be in place before that.

Needs (Debian): libportaudio2, libasound2-plugins, pulseaudio, pulseaudio-utils.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamer import mic
from streamer.errors import DeviceError
from tests.conftest import free_port, stop_process

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "tests" / "fixtures" / "03-01-05-02-01-01-01.flac"  # RAVDESS actor 01, angry, 4.1 s
SYSTEM_ALSA_CONF = "/usr/share/alsa/alsa.conf"


def _need(ok: bool, what: str) -> None:
    """Fail (never skip) with the Debian package that is missing."""
    if not ok:
        pytest.fail(f"{what} (CI installs it; see tests/test_mic.py docstring)", pytrace=False)


def _need_portaudio() -> None:
    out = subprocess.run([sys.executable, "-c", "import sounddevice"], capture_output=True, text=True)
    _need(out.returncode == 0, f"PortAudio is not loadable: {out.stderr.strip().splitlines()[-1:]} "
          "-> apt-get install libportaudio2")
    _need(Path(SYSTEM_ALSA_CONF).exists(), f"{SYSTEM_ALSA_CONF} missing -> apt-get install libasound2")


def _need_pulse_plugin() -> None:
    found = glob.glob("/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so") + \
        glob.glob("/usr/lib*/alsa-lib/libasound_module_pcm_pulse.so")
    _need(bool(found), "ALSA's pulse plugin is missing -> apt-get install libasound2-plugins")


def _known_wav(tmp_path: Path) -> tuple[Path, np.ndarray, int]:
    """The known WAV (16-bit PCM, as a recorder writes it) and its float32 samples."""
    y, sr = sf.read(CLIP, dtype="float32")
    wav = tmp_path / "known.wav"
    sf.write(wav, y, sr, subtype="PCM_16")
    ref, sr2 = sf.read(wav, dtype="float32")
    assert sr2 == sr == 16000
    return wav, ref, sr


def _child(code: str, env: dict[str, str], timeout: float = 60) -> dict:
    """Run ``code`` in a fresh interpreter (fresh PortAudio) and return the JSON it prints last."""
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env,
                          timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- ALSA file plugin ------------------------------------------------------------------------------

ALSA_FILE_CONF = """
pcm.emostream_test_raw {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{infile}"
    format "raw"
}}
pcm.emostream_test {{
    type plug
    slave {{
        pcm "emostream_test_raw"
        format FLOAT_LE
        rate {rate}
        channels 1
    }}
}}
"""

CAPTURE_FILE_DEVICE = r"""
import json, sys, threading, time
import numpy as np
from streamer.mic import MicSource, list_devices
n = {n}
names = [d["name"] for d in list_devices()]
m = MicSource("emostream_test", buffer_s=30, blocksize=64, start=False)
got = {{}}
reader = threading.Thread(target=lambda: got.setdefault("y", m.read(n, min_frames=n)))
reader.start()          # the reader waits on the ring before the first sample arrives
m.start()
reader.join(20)
t_end = time.monotonic() + 20   # the clock-less device runs on and outruns this idle reader
while m.overruns == 0 and time.monotonic() < t_end:   # (how soon depends on the machine's load)
    time.sleep(0.05)
stats = m.stats()
m.close()
m.close()               # safe twice
drained = sum(len(m.read(1 << 20)) for _ in range(5))  # what was left in the ring
after = m.read(1000)    # closed and drained: the end
np.save({out!r}, got["y"])
print(json.dumps({{"devices": names, "stats": stats, "rate": m.sample_rate, "channels": m.channels,
                  "uri": m.uri, "live": m.live, "drained": drained, "after_close": len(after)}}))
"""


def _alsa_file_env(tmp_path: Path, ref: np.ndarray, sr: int) -> dict[str, str]:
    raw = tmp_path / "known.f32"
    ref.astype("<f4").tofile(raw)
    conf = tmp_path / "asound.conf"
    conf.write_text(ALSA_FILE_CONF.format(infile=raw, rate=sr))
    return {"ALSA_CONFIG_PATH": f"{SYSTEM_ALSA_CONF}:{conf}"}


@pytest.mark.mic
def test_capture_through_portaudio_matches_the_known_wav(tmp_path):
    _need_portaudio()
    _, ref, sr = _known_wav(tmp_path)
    env = _alsa_file_env(tmp_path, ref, sr)
    out = tmp_path / "captured.npy"
    info = _child(CAPTURE_FILE_DEVICE.format(n=len(ref), out=str(out)), env)

    assert "emostream_test" in info["devices"]
    assert info["rate"] == sr  # the device's own default rate
    assert info["channels"] == 1 and info["uri"] == "mic:emostream_test" and info["live"] is True
    y = np.load(out)
    assert y.dtype == np.float32 and y.shape == (len(ref), 1)
    # every sample of the WAV arrives, bit for bit, in order
    np.testing.assert_array_equal(y[:, 0], ref)
    st = info["stats"]
    assert st["frames_captured"] > len(ref)
    # the clock-less device outran the reader: the ring dropped audio and said so
    assert st["overruns"] > 0 and st["dropped_frames"] > 0, st
    assert 0 < info["drained"] <= 30 * sr and info["after_close"] == 0


@pytest.mark.mic
def test_devices_command_lists_the_configured_device(tmp_path):
    _need_portaudio()
    _, ref, sr = _known_wav(tmp_path)
    env = {**os.environ, **_alsa_file_env(tmp_path, ref, sr), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "streamer", "devices"], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if ln.split()[1:2] == ["emostream_test"]]
    assert line and "16000 Hz" in line[0] and "ALSA" in line[0]


@pytest.mark.mic
def test_missing_device_is_one_clear_error(tmp_path):
    _need_portaudio()
    _, ref, sr = _known_wav(tmp_path)
    env = _alsa_file_env(tmp_path, ref, sr)
    info = _child(r"""
import json
from streamer.errors import DeviceError
from streamer.mic import MicSource, find_device
out = {}
for dev in ("no-such-device-xyz", 999, "999"):
    try:
        MicSource(dev)
    except DeviceError as exc:
        out[repr(dev)] = [str(exc), exc.exit_code]
d = find_device("EMOSTREAM_TEST")            # exact name, any case, wins over partial matches
out["exact"] = d["name"]
try:
    find_device("emostream_test_")           # part of one name only
    out["partial"] = "ok"
except DeviceError as exc:
    out["partial"] = str(exc)
print(json.dumps(out))
""", env)
    assert info["'no-such-device-xyz'"][1] == 4
    assert "no audio input device matching 'no-such-device-xyz'" in info["'no-such-device-xyz'"][0]
    assert "index 999" in info["999"][0] and "index 999" in info["'999'"][0]  # an index, as int or text
    assert info["exact"] == "emostream_test"
    assert info["partial"] == "ok"


STALL = r"""
import json, os, threading, time
from streamer.errors import DeviceError
from streamer.mic import MicSource
fifo = {fifo!r}
fds = []
# the ALSA file plugin opens its infile (a FIFO) when PortAudio opens the device; give it a writer
# that never writes, so the device hangs without failing, as a wedged driver does
threading.Thread(target=lambda: fds.append(os.open(fifo, os.O_WRONLY)), daemon=True).start()
m = MicSource("emostream_stall", sample_rate=16000, stall_s=1.0)
t = time.monotonic()
try:
    m.read(1600)
    out = {{"error": None}}
except DeviceError as exc:
    out = {{"error": str(exc), "after": time.monotonic() - t}}
os.close(fds[0])   # end of file: PortAudio's thread wakes and the stream can close
m.close()
print(json.dumps(out))
"""


@pytest.mark.mic
def test_a_stalled_device_is_an_error_not_a_hang(tmp_path):
    _need_portaudio()
    fifo = tmp_path / "stall.fifo"
    os.mkfifo(fifo)
    conf = tmp_path / "asound-stall.conf"
    conf.write_text(f'pcm.emostream_stall {{ type file slave.pcm "null" file "/dev/null" infile "{fifo}" format "raw" }}\n')
    info = _child(STALL.format(fifo=str(fifo)), {"ALSA_CONFIG_PATH": f"{SYSTEM_ALSA_CONF}:{conf}"}, timeout=60)
    assert info["error"] and "delivered no audio for 1 s" in info["error"]
    assert 0.9 < info["after"] < 30  # after the stall limit, long before "for ever" (a loaded machine is slow)


class _NoPortAudio:
    """A meta-path finder that makes `import sounddevice` fail as it does without libportaudio."""

    def find_spec(self, name, path=None, target=None):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return None


def test_missing_portaudio_is_one_clear_error(monkeypatch, capsys):
    from streamer.cli import main

    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoPortAudio(), *sys.meta_path])
    with pytest.raises(DeviceError, match="PortAudio is not available.*libportaudio2"):
        mic.list_devices()
    with pytest.raises(DeviceError):
        mic.MicSource()
    assert main(["devices"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("emostream: error: PortAudio is not available")


# --- PulseAudio null sink monitor (paced in real time) ---------------------------------------------

PULSE_ALSA_CONF = """
pcm.emostream_pulse {{
    type pulse
    server "unix:{sock}"
    device "emostream_sink.monitor"
}}
"""

LIVE_TIMELINE = r"""
import json, subprocess, sys, threading, time
import numpy as np
from streamer.labelling import analyse, load_model
from streamer.mic import MicSource
from streamer.sources import Source

class Tee(Source):
    '''The microphone, keeping a copy of every block the pipeline reads.'''
    live = True
    def __init__(self, src):
        super().__init__()
        self.src, self.blocks = src, []
        self.sample_rate, self.channels, self.uri = src.sample_rate, src.channels, src.uri
    def read(self, n):
        b = self.src.read(n)
        self.blocks.append(b.copy())
        return b
    def close(self):
        self.src.close()

meta, clf = load_model()
m = MicSource("emostream_pulse", sample_rate=16000)
tee = Tee(m)
events, result = [], {{}}
def work():
    try:
        result["analysis"] = analyse(tee, meta, clf, on_event=lambda ev: events.append(ev.to_wire()))
    except BaseException as exc:
        result["error"] = repr(exc)
t = threading.Thread(target=work)
t.start()
time.sleep(0.5)
play = subprocess.run(["paplay", "--server", {server!r}, "--device", "emostream_sink", {clip!r}],
                      capture_output=True, text=True, timeout=60)
assert play.returncode == 0, play.stderr
time.sleep(meta.features.window_s + 0.5)   # some silence after the clip, as a live call has
stats = m.stats()
m.close()                                   # end of the stream: the pipeline drains and finishes
t.join(30)
assert "analysis" in result, result
analysis = result["analysis"]
np.save({out!r}, np.concatenate(tee.blocks))
print(json.dumps({{"events": events, "stats": stats, "overruns": analysis.stats.overruns}}))
"""


@pytest.fixture
def pulse():
    """A private PulseAudio daemon with a 16 kHz float null sink; yields its socket path."""
    for tool, pkg in (("pulseaudio", "pulseaudio"), ("paplay", "pulseaudio-utils")):
        _need(shutil.which(tool) is not None, f"{tool} not found -> apt-get install {pkg}")
    # a short path of its own: a unix socket's path must stay under 108 bytes
    run = Path(tempfile.mkdtemp(prefix="emo-pa-"))
    sock = run / "native"
    conf = run / "default.pa"
    conf.write_text(
        f"load-module module-native-protocol-unix socket={sock} auth-anonymous=1\n"
        "load-module module-null-sink sink_name=emostream_sink rate=16000 format=float32le channels=1\n")
    env = {**os.environ, "HOME": str(run), "XDG_RUNTIME_DIR": str(run), "XDG_CONFIG_HOME": str(run),
           "PULSE_RUNTIME_PATH": str(run)}
    log = open(run / "pulseaudio.log", "w")
    proc = subprocess.Popen(["pulseaudio", "-n", "-F", str(conf), "--daemonize=no", "--exit-idle-time=-1",
                             "--use-pid-file=no", "--disable-shm=yes", "--log-target=stderr"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 15
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"pulseaudio did not start:\n{(run / 'pulseaudio.log').read_text()[-2000:]}",
                            pytrace=False)
            time.sleep(0.1)
        yield sock
    finally:
        stop_process(proc, timeout=10)
        log.close()
        shutil.rmtree(run, ignore_errors=True)


def _windows(events: list[dict]) -> list[tuple]:
    return [(round(e["start"], 3), e["speech"], e["label"]) for e in events if e["type"] == "window"]


@pytest.mark.mic
def test_live_timeline_from_a_real_time_capture_device(tmp_path, pulse):
    """Clip -> PulseAudio null sink -> monitor -> ALSA pulse plugin -> PortAudio -> MicSource ->
    live pipeline. The audio must arrive intact and the live timeline must be the timeline of that
    same audio labelled offline."""
    _need_portaudio()
    _need_pulse_plugin()
    wav, ref, sr = _known_wav(tmp_path)
    conf = tmp_path / "asound-pulse.conf"
    conf.write_text(PULSE_ALSA_CONF.format(sock=pulse))
    out = tmp_path / "captured.npy"
    code = LIVE_TIMELINE.format(server=f"unix:{pulse}", clip=str(wav), out=str(out))
    info = _child(code, {"ALSA_CONFIG_PATH": f"{SYSTEM_ALSA_CONF}:{conf}", "PULSE_SERVER": f"unix:{pulse}"},
                  timeout=120)

    y = np.load(out)[:, 0]
    st = info["stats"]
    assert st["overflows"] == 0 and st["overruns"] == 0 and info["overruns"] == 0, st
    # paced like a microphone: about clip + 0.5 s before + the trailing wait, not a burst
    assert len(ref) < len(y) < len(ref) + 12 * sr
    # the clip is in the captured audio sample for sample (PulseAudio may lose the very first one)
    # the clip is in the captured audio sample for sample; PulseAudio may start the monitor a few
    # milliseconds into the first playback, so the very beginning of the clip may be missing
    start = _locate(y, ref)  # where ref[0] is (or would be) in the captured audio
    lost = max(0, -start)
    assert lost < 0.05 * sr, f"the first {lost} samples of the clip did not arrive"
    seg = y[start + lost : start + len(ref)]
    same = np.mean(seg == ref[lost : lost + len(seg)])
    assert len(seg) == len(ref) - lost and same > 0.999, f"only {same:.4f} of the clip arrived intact"
    assert np.all(y[: max(0, start)] == 0), "something but silence before the clip"

    # the live timeline is the offline timeline of the same audio
    from streamer.labelling import analyse, load_model
    from streamer.sources import ArraySource

    meta, clf = load_model()
    offline: list[dict] = []
    analyse(ArraySource(y, sr, uri="captured"), meta, clf, on_event=offline.append)
    live = info["events"]
    assert _windows(live) == _windows(offline)
    assert [(e["label"], round(e["start"], 3)) for e in live if e["type"] == "segment"] == \
        [(e["label"], round(e["start"], 3)) for e in offline if e["type"] == "segment"]
    # speech where the clip is, silence before it
    t0 = max(0, start) / sr
    speech = [e for e in live if e["type"] == "window" and e["speech"]]
    assert speech, "no speech window in the live timeline"
    assert all(e["end"] > t0 for e in speech)
    assert all(e["label"] is None for e in live if e["type"] == "window" and not e["speech"])


def _locate(y: np.ndarray, ref: np.ndarray) -> int:
    """Index in ``y`` where ``ref[0]`` sits (or would: it may be lost), by an exact 64-sample match."""
    loud = int(np.argmax(np.abs(ref) > 0.05))  # a stretch of speech: unique, unlike the noise floor
    probe = ref[loud : loud + 64]
    hits = np.flatnonzero(np.lib.stride_tricks.sliding_window_view(y, 64).__eq__(probe).all(axis=1))
    assert len(hits) == 1, f"clip found {len(hits)} times in the captured audio"
    return int(hits[0]) - loud


@pytest.mark.mic
def test_serve_mic_streams_the_devices_timeline(tmp_path, pulse):
    """`emostream serve --mic --device NAME` on the paced device: a subscriber gets the clip's timeline.

    PortAudio opens the pulse device at its own default rate (not 16 kHz), so this also runs the
    pipeline's resampling of live input.
    """
    _need_portaudio()
    _need_pulse_plugin()
    from websockets.sync.client import connect

    wav, ref, sr = _known_wav(tmp_path)
    conf = tmp_path / "asound-pulse.conf"
    conf.write_text(PULSE_ALSA_CONF.format(sock=pulse))
    env = {**os.environ, "ALSA_CONFIG_PATH": f"{SYSTEM_ALSA_CONF}:{conf}", "PULSE_SERVER": f"unix:{pulse}",
           "PYTHONPATH": str(ROOT)}
    port = free_port()
    log = open(tmp_path / "serve.log", "w+")
    srv = subprocess.Popen([sys.executable, "-m", "streamer", "serve", "--mic", "--device", "emostream_pulse",
                            "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        msgs: list[dict] = []
        deadline = time.monotonic() + 60
        while True:
            try:
                ws = connect(f"ws://127.0.0.1:{port}/ws")
                break
            except OSError:
                if srv.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail(f"serve --mic did not start:\n{log.read()[-3000:]}", pytrace=False)
                time.sleep(0.2)
        with ws:
            hello = json.loads(ws.recv(timeout=30))
            assert hello["type"] == "hello" and hello["source"] == "mic:emostream_pulse"
            play = subprocess.run(["paplay", "--server", f"unix:{pulse}", "--device", "emostream_sink", str(wav)],
                                  capture_output=True, text=True, timeout=60)
            assert play.returncode == 0, play.stderr
            t_end = time.monotonic() + 4.0  # a window and a hop after the clip
            while time.monotonic() < t_end:
                try:
                    msgs.append(json.loads(ws.recv(timeout=max(0.05, t_end - time.monotonic()))))
                except TimeoutError:
                    break
    finally:
        stop_process(srv)
        log.close()
    windows = [m for m in msgs if m["type"] == "window"]
    assert [m["seq"] for m in msgs] == list(range(msgs[0]["seq"], msgs[0]["seq"] + len(msgs)))
    speech = [w for w in windows if w["speech"]]
    assert len(speech) >= 2, f"the clip was not heard: {windows}"
    assert all(w["label"] in hello["labels"] and 0 < w["confidence"] <= 1 for w in speech)
    # the live timeline covers the clip's length in audio time, no more than a window and a bit more
    span = max(w["end"] for w in speech) - min(w["start"] for w in speech)
    assert len(ref) / sr - 1.0 <= span <= len(ref) / sr + hello["window"] + 1.0


API_STREAM = r"""
import json, subprocess, threading, time
import streamer

def play():
    time.sleep(1.0)
    subprocess.run(["paplay", "--server", {server!r}, "--device", "emostream_sink", {clip!r}], check=True, timeout=60)

player = threading.Thread(target=play)
player.start()
events, t0 = [], time.monotonic()
for ev in streamer.stream("mic:emostream_pulse", sample_rate=16000):
    events.append(ev.to_wire())
    if time.monotonic() - t0 > 9.0:   # the clip (4 s) and a window after it
        break                         # leaving the loop stops the analysis and closes the device
player.join()
print(json.dumps({{"events": events, "threads": threading.active_count()}}))
"""


@pytest.mark.mic
def test_python_api_streams_a_microphone(tmp_path, pulse):
    """streamer.stream("mic:DEVICE"): a hello, then the live timeline of what the device hears."""
    _need_portaudio()
    _need_pulse_plugin()
    wav, _, _ = _known_wav(tmp_path)
    conf = tmp_path / "asound-pulse.conf"
    conf.write_text(PULSE_ALSA_CONF.format(sock=pulse))
    code = API_STREAM.format(server=f"unix:{pulse}", clip=str(wav))
    info = _child(code, {"ALSA_CONFIG_PATH": f"{SYSTEM_ALSA_CONF}:{conf}", "PULSE_SERVER": f"unix:{pulse}"},
                  timeout=120)
    evs = info["events"]
    assert evs[0]["type"] == "hello" and evs[0]["source"] == "mic:emostream_pulse"
    windows = [e for e in evs if e["type"] == "window"]
    assert len(windows) >= 4 and any(w["speech"] for w in windows) and any(not w["speech"] for w in windows)
    assert info["threads"] <= 2  # the reader thread ended with the loop (only the main thread, maybe PortAudio's)
