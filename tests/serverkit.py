"""What the server tests share: a fake pipeline (one window per second, no model), an upload
labeller that decodes for real, a server on a free loopback port, and small HTTP/WebSocket helpers."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import numpy as np

from streamer.errors import InputError
from streamer.server import EmoServer, ServerConfig

LABELS = ["calm", "angry"]


class FakePipeline:
    """One window per second of input: 'angry' when loud, else 'calm'."""

    def __init__(self, rate: int, channels: int):
        self.rate, self.channels = rate, channels
        self.buf = np.zeros((0, channels), np.float32)
        self.t = 0
        self.samples = 0

    # the facts a hello is made of (events.Hello.of)
    labels = LABELS
    window_s = hop_s = 1.0
    channel_names = ["mix"]
    model_info = {"name": "fake", "version": "0"}

    @property
    def sample_rate(self):
        return self.rate

    def feed(self, block):
        self.samples += len(block)
        self.buf = np.concatenate([self.buf, block])
        out = []
        while len(self.buf) >= self.rate:
            w, self.buf = self.buf[: self.rate], self.buf[self.rate:]
            loud = float(np.sqrt(np.mean(w ** 2))) > 0.1
            label = "angry" if loud else "calm"
            out.append({"type": "window", "start": float(self.t), "end": self.t + 1.0, "channel": 0,
                        "channel_name": "mix", "speech": True, "label": label, "confidence": 0.9,
                        "probs": {label: 0.9}, "raw": [0.9, 0.1]})
            self.t += 1
        return out

    def finish(self):
        return [{"type": "segment", "start": 0.0, "end": float(self.t), "channel": 0, "channel_name": "mix",
                 "label": "calm", "confidence": 0.9}]


def check_audio_labeler(path: str, name: str) -> dict:
    """Decodes the upload for real (so non-audio fails as it would) without needing the model."""
    from streamer.sources import open_source

    with open_source(path) as src:
        n = 0
        while len(blk := src.read(65536)):
            n += len(blk)
        if n == 0:
            raise InputError(f"{name}: no audio")
        return {"source": name, "duration": n / src.sample_rate, "sample_rate": src.sample_rate,
                "windows": [], "segments": []}


def make_server(**cfg) -> EmoServer:
    return EmoServer(ServerConfig(port=0, **cfg), pipeline_factory=FakePipeline, labeler=check_audio_labeler)


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def win(i):
    return {"type": "window", "start": float(i), "end": i + 1.0, "channel": 0, "speech": True,
            "label": "calm", "confidence": 0.5, "probs": {"calm": 0.5}}


async def recv_until_seq(ws, last):
    """Messages until (and including) the one with seq ``last``."""
    out = []
    while True:
        m = json.loads(await ws.recv())
        out.append(m)
        if m.get("seq") == last:
            return out


def http(url, data=None, headers=None, method=None):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


async def send_stream(port: int, sid: str, seconds: int, rate: int = 8000, pause: float = 0.0,
                      token: str | None = None) -> list[dict]:
    """Ingest ``seconds`` of 16-bit audio (loud every other second) as stream ``sid``; returns
    every message the ingest connection got back."""
    from websockets.asyncio.client import connect

    t = np.arange(rate) / rate
    loud = (0.5 * np.sin(2 * np.pi * 200 * t) * 32767).astype("<i2").tobytes()
    quiet = np.zeros(rate, "<i2").tobytes()
    got = []
    q = f"&token={token}" if token else ""
    async with connect(f"ws://127.0.0.1:{port}/ingest?stream={sid}{q}") as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": rate, "channels": 1, "encoding": "pcm_s16le"}))
        for i in range(seconds):
            await ws.send(loud if i % 2 else quiet)
            if pause:
                await asyncio.sleep(pause)
        await ws.send('{"type":"stop"}')
        async for frame in ws:
            got.append(json.loads(frame))
    return got
