"""Fuzz tests (Hypothesis, a bounded number of cases, derandomized so CI runs the same ones): the
protocol decoder takes any text and either returns a valid message or raises ProtocolError; the
server's HTTP side answers any bytes with a well-formed response that is never a 5xx, and serves
normally afterwards."""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serverkit import FakePipeline, check_audio_labeler

from streamer import protocol
from streamer.errors import ProtocolError
from streamer.server import EmoServer, ServerConfig

pytestmark = pytest.mark.slow  # hundreds of generated cases: run with --all

FUZZ = settings(max_examples=300, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])
FUZZ_IO = settings(FUZZ, max_examples=120)

# -- the protocol decoder ----------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)
start_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["start", "stop", "hello", "START", ""]) | st.text(max_size=10)},
    optional={"sample_rate": json_values | st.integers(-10**30, 10**30) | st.sampled_from([8000, 16000, 1e400]),
              "channels": json_values | st.integers(-3, 12),
              "encoding": json_values | st.sampled_from(list(protocol.ENCODINGS) + ["opus", "PCM_S16LE"])},
)


def _dumps(obj) -> str:
    # allow_nan: the hostile client sends NaN/Infinity tokens too
    return json.dumps(obj, allow_nan=True)


def _check_client(frame) -> None:
    try:
        msg = protocol.parse_client(frame)
    except ProtocolError as exc:
        text = str(exc)
        assert text and "\n" not in text and len(text) < 400
        assert len(protocol.close_reason(text).encode("utf-8")) <= protocol.MAX_CLOSE_REASON
        return
    if isinstance(msg, protocol.Start):
        assert protocol.MIN_RATE <= msg.sample_rate <= protocol.MAX_RATE
        assert 1 <= msg.channels <= protocol.MAX_CHANNELS and msg.encoding in protocol.ENCODINGS
        assert type(msg.sample_rate) is int and type(msg.channels) is int
    else:
        assert isinstance(msg, protocol.Stop)


@FUZZ
@given(st.text(max_size=300) | st.binary(max_size=300))
def test_decoder_takes_any_text(frame):
    _check_client(frame)


@FUZZ
@given(start_like)
def test_decoder_takes_any_start_like_object(obj):
    _check_client(_dumps(obj))


@FUZZ
@given(json_values, st.integers(1, 200))
def test_decoder_takes_deep_and_mangled_json(value, depth):
    text = _dumps(value)
    for frame in ("[" * depth + text + "]" * depth, '{"type":"start","x":' + "[" * depth + text + "]" * depth + "}",
                  text[: len(text) // 2], text.replace('"', "", 1)):
        _check_client(frame)


def _depth(v) -> int:
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    return 0


@FUZZ
@given(json_values)
def test_json_depth_matches_the_parsed_depth(value):
    assert protocol.json_depth(_dumps(value)) == _depth(value)


@FUZZ
@given(st.text(max_size=400))
def test_close_reason_always_fits(text):
    out = protocol.close_reason(text)
    assert len(out.encode("utf-8")) <= protocol.MAX_CLOSE_REASON


# -- the HTTP request parser (a real server on loopback) ---------------------------------------

class _ServerThread:
    """An EmoServer on a free loopback port, run by its own event loop in a thread."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.srv = EmoServer(ServerConfig(port=0, open_timeout=1.0, idle_timeout=1.0, upload_timeout=2.0,
                                          max_upload=1 << 20),
                             pipeline_factory=FakePipeline, labeler=check_audio_labeler)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.srv.start(), self.loop).result(30)
        self.port = self.srv.port

    def close(self):
        asyncio.run_coroutine_threadsafe(self.srv.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def server():
    s = _ServerThread()
    try:
        yield s
    finally:
        s.close()


def _exchange(port: int, data: bytes, half_close: bool = True) -> bytes:
    """Send ``data`` and read the answer until the server closes. ``half_close`` ends our side at
    once, so an incomplete request ends quickly (websockets answers nothing to a GET cut short)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed before reading everything
            pass
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        return out


TOKEN_CHARS = st.characters(min_codepoint=0, max_codepoint=255)
methods = st.sampled_from(["GET", "POST", "PUT", "HEAD", "OPTIONS", "get"]) | st.text(TOKEN_CHARS, max_size=8)
targets = (st.sampled_from(["/", "/streams", "/label", "/ws", "/ingest", "/health", "/metrics", "/render",
                            "/index.html", "/label?filename=a.wav", "/ws?since=1&stream=x", "*"])
           | st.text(TOKEN_CHARS, max_size=40))
versions = st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2", "HTTP/1.1 extra"]) | st.text(TOKEN_CHARS, max_size=10)
header_names = st.sampled_from(["Host", "Content-Length", "Origin", "Upgrade", "Connection", "Sec-WebSocket-Key",
                                "Sec-WebSocket-Version", "Expect", "Transfer-Encoding", "Content-Type",
                                "Authorization"]) | st.text(TOKEN_CHARS, max_size=12)
header_values = (st.sampled_from(["127.0.0.1", "localhost:1", "evil.example", "websocket", "Upgrade", "13",
                                  "dGhlIHNhbXBsZSBub25jZQ==", "100-continue", "chunked", "0", "5", "-1", "99999999",
                                  "multipart/form-data; boundary=b", "http://127.0.0.1"])
                 | st.text(TOKEN_CHARS, max_size=30))
requests = st.builds(
    lambda m, t, v, hs, sep, body: (f"{m} {t} {v}{sep}" + "".join(f"{k}: {val}{sep}" for k, val in hs) + sep).encode(
        "latin-1") + body,
    methods, targets, versions, st.lists(st.tuples(header_names, header_values), max_size=8),
    st.sampled_from(["\r\n", "\n", "\r\n"]), st.binary(max_size=64),
)


def _check_response(resp: bytes, req: bytes = b"") -> None:
    if not resp:
        # nothing only for a request the server could not finish reading (no blank line yet)
        assert b"\r\n\r\n" not in req or req.startswith(b"GET "), req[:200]
        return
    assert resp.startswith(b"HTTP/1.1 "), resp[:80]
    code = int(resp[9:12])
    assert 100 <= code < 500 or code == 503, resp[:300]
    if code not in (101, 100):
        head, _, body = resp.partition(b"\r\n\r\n")
        assert b"Content-Length: " in head


@FUZZ_IO
@given(requests)
def test_http_parser_takes_any_request(server, req):
    _check_response(_exchange(server.port, req), req)


@FUZZ_IO
@given(st.binary(max_size=200))
def test_http_parser_takes_any_bytes(server, data):
    _check_response(_exchange(server.port, data))


def test_server_still_serves_after_the_fuzz(server):
    for target in (b"/streams", b"/health"):
        resp = _exchange(server.port, b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", half_close=False)
        assert resp.startswith(b"HTTP/1.1 200"), resp[:200]
