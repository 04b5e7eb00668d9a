"""``GET /health`` on a real loopback server: 200 with the stream count, 503 when the backend (or
the server itself) cannot serve, the token required like everywhere else."""

from __future__ import annotations

import asyncio
import json

from serverkit import LABELS, FakePipeline, http, make_server, run
from websockets.asyncio.client import connect

from streamer.server import EmoServer, MemoryBackend, ServerConfig


def get(url):
    code, ctype, body = http(url)
    return code, ctype, json.loads(body)


def test_health_counts_streams_and_subscribers():
    async def main():
        async with make_server() as srv:
            url = f"http://127.0.0.1:{srv.port}/health"
            code, ctype, body = await asyncio.to_thread(get, url)
            assert code == 200 and ctype == "application/json"
            assert body["status"] == "ok" and body["streams"] == 0 and body["subscribers"] == 0
            assert body["backend"] == {"backend": "memory", "ok": True} and body["uptime_s"] >= 0
            srv.hub.create("a", {"labels": LABELS}, kind="ingest")
            srv.hub.create("b", {"labels": LABELS}, kind="ingest").end()
            async with connect(f"ws://127.0.0.1:{srv.port}/ws?stream=a") as ws:
                await ws.recv()
                code, _, body = await asyncio.to_thread(get, url)
                assert code == 200 and body["streams"] == 1 and body["subscribers"] == 1
    run(main())


class Unreachable(MemoryBackend):
    """A backend that cannot reach its store (as a Redis backend reports an outage)."""

    name = "redis"

    def __init__(self, error: str | None = "Connection refused", raises: bool = False):
        super().__init__()
        self.error, self.raises = error, raises

    async def list_streams(self):
        if self.raises:
            raise OSError("socket gone")
        return []

    async def health(self):
        if self.raises:
            raise OSError("socket gone")
        return {"ok": self.error is None, "error": self.error, "url": "redis://127.0.0.1:1/0"}


def test_health_is_503_when_the_backend_cannot_serve():
    async def main():
        backend = Unreachable()
        srv = EmoServer(ServerConfig(port=0), pipeline_factory=FakePipeline, backend=backend)
        async with srv:
            url = f"http://127.0.0.1:{srv.port}/health"
            code, _, body = await asyncio.to_thread(get, url)
            assert code == 503 and body["status"] == "unavailable"
            assert body["reason"] == "redis backend: Connection refused"
            assert body["backend"]["ok"] is False and body["backend"]["url"] == "redis://127.0.0.1:1/0"
            backend.error = None  # it came back
            code, _, body = await asyncio.to_thread(get, url)
            assert code == 200 and body["status"] == "ok" and "reason" not in body
            backend.raises = True  # a backend that cannot even answer
            code, _, body = await asyncio.to_thread(get, url)
            assert code == 503 and "socket gone" in body["reason"]
            srv.hub.create("mine", {"labels": LABELS}, kind="ingest")  # still listed: this node's own
            code, _, rows = await asyncio.to_thread(get, f"http://127.0.0.1:{srv.port}/streams")
            assert code == 200 and [r["id"] for r in rows] == ["mine"]
            async with connect(f"ws://127.0.0.1:{srv.port}/ws?streams=all") as feed:
                assert [r["id"] for r in json.loads(await feed.recv())["streams"]] == ["mine"]
    run(main())


def test_health_is_503_once_the_server_is_closing():
    async def main():
        srv = make_server()
        assert (await srv.router.health()).status_code == 503  # not started
        await srv.start()
        assert (await srv.router.health()).status_code == 200
        await srv.close()
        resp = await srv.router.health()
        assert resp.status_code == 503 and json.loads(resp.body)["reason"] == "shutting down"
    run(main())


def test_health_needs_the_token():
    async def main():
        async with make_server(token="t0k") as srv:
            base = f"http://127.0.0.1:{srv.port}/health"
            assert (await asyncio.to_thread(http, base))[0] == 401
            assert (await asyncio.to_thread(http, base + "?token=t0k"))[0] == 200
            assert (await asyncio.to_thread(http, base, None, {"Authorization": "Bearer t0k"}))[0] == 200
    run(main())
