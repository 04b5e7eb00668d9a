"""Streams shared by many server processes through Redis (Redis Streams, leases, a listing).

Keys (``P`` is the prefix, ``emostream`` by default; one Redis, not Redis Cluster: the scripts
touch keys of many streams)::

    P:lease:ID   the stream id's lease: the owner's token, PX lease_s, renewed by the owner
    P:info:ID    hash: log (the current log key), owner, node, live ("1"/"0"), seq (last stored),
                 started, hello (the hello frame), info (the owner's GET /streams object, JSON)
    P:log:ID:GEN the stream's messages: a Redis Stream whose entry ids are ``SEQ-1`` (a message)
                 and ``SEQ-0`` (a note without seq, such as the error that precedes a forced end),
                 field ``m`` holding the JSON text frame; trimmed with ``MAXLEN ~``
    P:index      sorted set of stream ids by start time (the cluster's GET /streams)

A new stream under an id that ended gets a new log key (a new generation), so subscribers still
reading the old one finish it undisturbed. Entry ids derived from ``seq`` make ``since`` replay an
``XRANGE`` and make appends idempotent (an entry at or below the stored seq is skipped). When an
owner dies its lease expires; any node's reaper (or the next claim of the id) then appends an
``error`` and an ``end`` to the stream, which every follower reads like any other message. Live
keys expire ``retain_s`` after the last renewal, ended ones ``retain_s`` after their end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterable
from urllib.parse import urlsplit

from streamer import protocol
from streamer.errors import EmostreamError, UsageError

__all__ = ["RedisStore", "RedisUnavailable", "RemoteStream", "Note"]

log = logging.getLogger("emostream.redis")


class RedisUnavailable(EmostreamError):
    """Redis cannot be reached (a missing service: exit 4, like a missing device)."""

    exit_code = 4


@dataclass(frozen=True)
class RemoteStream:
    """One stream as Redis knows it."""

    id: str
    log: str             # the log key of this generation
    hello: str | None    # the hello frame (JSON text)
    node: str            # the owning node's name
    owner: str           # the owning process's token
    live: bool
    seq: int             # the last seq stored


@dataclass(frozen=True)
class Note:
    """A gap in a replay: messages after ``since`` up to ``first - 1`` were trimmed."""

    since: int
    first: int

    def text(self) -> str:
        """The ``error`` frame telling a subscriber what it missed."""
        return protocol.encode(protocol.error(
            f"history no longer holds seq {self.since + 1} to {self.first - 1}; replaying from {self.first}"))


# Appends a batch to a stream this process owns. KEYS: info, log. ARGV: owner token, maxlen, info
# JSON ("" keeps it), then seq, text pairs in order. Returns the stored seq, or -1 when the stream
# is not live under this owner (reaped after a lost lease, or replaced): the owner stops publishing.
_APPEND = """
local info, lg = KEYS[1], KEYS[2]
if redis.call('HGET', info, 'owner') ~= ARGV[1] or redis.call('HGET', info, 'live') ~= '1' then
  return -1
end
local last = tonumber(redis.call('HGET', info, 'seq') or '0')
for i = 4, #ARGV, 2 do
  local seq = tonumber(ARGV[i])
  if seq > last then
    redis.call('XADD', lg, 'MAXLEN', '~', ARGV[2], seq .. '-1', 'm', ARGV[i + 1])
    last = seq
  end
end
if ARGV[3] ~= '' then
  redis.call('HSET', info, 'seq', last, 'info', ARGV[3])
else
  redis.call('HSET', info, 'seq', last)
end
return last
"""

# Ends a stream. KEYS: info, log, lease, index. ARGV: token ("" = any owner: the reaper), retain ms,
# note text ("" = none), end text template with SEQ standing for the end's seq, maxlen, stream id,
# info JSON ("" keeps it). The owner passes its token; the reaper passes "" and acts only when the
# lease is gone. Returns the end's seq, or -1 when nothing was done.
_END = """
local info, lg, lease, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('HGET', info, 'live') ~= '1' then return -1 end
if ARGV[1] ~= '' then
  if redis.call('HGET', info, 'owner') ~= ARGV[1] then return -1 end
elseif redis.call('EXISTS', lease) == 1 then
  return -1
end
local seq = tonumber(redis.call('HGET', info, 'seq') or '0') + 1
if ARGV[3] ~= '' then
  redis.call('XADD', lg, 'MAXLEN', '~', ARGV[5], seq .. '-0', 'm', ARGV[3])
end
redis.call('XADD', lg, 'MAXLEN', '~', ARGV[5], seq .. '-1', 'm', (string.gsub(ARGV[4], 'SEQ', tostring(seq))))
redis.call('HSET', info, 'live', '0', 'seq', seq, 'ended', ARGV[8])
if ARGV[7] ~= '' then redis.call('HSET', info, 'info', ARGV[7]) end
if ARGV[1] ~= '' and redis.call('GET', lease) == ARGV[1] then redis.call('DEL', lease) end
redis.call('PEXPIRE', info, ARGV[2])
redis.call('PEXPIRE', lg, ARGV[2])
return seq
"""

# Claims an id. KEYS: lease, info, index. ARGV: token, lease ms, retain ms, new log key, node name,
# started, hello, info JSON, stream id, note text, end template, maxlen, now. Fails (0) while a
# lease holds the id. A stream still marked live without a lease (its owner died, not yet reaped)
# is ended first, so its followers finish before the id starts a new generation.
_CLAIM = """
local lease, info, index = KEYS[1], KEYS[2], KEYS[3]
if redis.call('SET', lease, ARGV[1], 'NX', 'PX', ARGV[2]) == false then return 0 end
if redis.call('HGET', info, 'live') == '1' then
  local old = redis.call('HGET', info, 'log')
  local seq = tonumber(redis.call('HGET', info, 'seq') or '0') + 1
  redis.call('XADD', old, seq .. '-0', 'm', ARGV[10])
  redis.call('XADD', old, seq .. '-1', 'm', (string.gsub(ARGV[11], 'SEQ', tostring(seq))))
  redis.call('PEXPIRE', old, ARGV[3])
end
redis.call('DEL', info)
redis.call('HSET', info, 'log', ARGV[4], 'owner', ARGV[1], 'node', ARGV[5], 'live', '1', 'seq', 0,
           'started', ARGV[6], 'hello', ARGV[7], 'info', ARGV[8])
redis.call('PEXPIRE', info, ARGV[3] + ARGV[2])
redis.call('ZADD', index, ARGV[6], ARGV[9])
return 1
"""

# Renews this process's leases. KEYS: lease, info, log triples. ARGV: token, lease ms, keep ms.
# A lease that expired while Redis was out is taken back when the stream is still live under
# this owner (nobody reaped it). Returns the positions (1-based triples) of lost streams.
_RENEW = """
local lost = {}
for i = 1, #KEYS, 3 do
  local lease, info, lg = KEYS[i], KEYS[i + 1], KEYS[i + 2]
  local v = redis.call('GET', lease)
  if v == ARGV[1] then
    redis.call('PEXPIRE', lease, ARGV[2])
  elseif v == false and redis.call('HGET', info, 'owner') == ARGV[1] and redis.call('HGET', info, 'live') == '1' then
    redis.call('SET', lease, ARGV[1], 'PX', ARGV[2])
  else
    table.insert(lost, (i + 2) / 3)
  end
  if v == ARGV[1] or v == false then
    redis.call('PEXPIRE', info, ARGV[3])
    redis.call('PEXPIRE', lg, ARGV[3])
  end
end
return lost
"""

# Forgets a claim that never became a stream. KEYS: lease, info, index. ARGV: token, stream id.
_RELEASE = """
if redis.call('HGET', KEYS[2], 'owner') == ARGV[1] and redis.call('HGET', KEYS[2], 'seq') == '0' then
  redis.call('DEL', KEYS[2])
  redis.call('ZREM', KEYS[3], ARGV[2])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

# The ids of streams marked live whose lease is gone (their owner died). KEYS: index. ARGV: prefix.
_ORPHANS = """
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local info = ARGV[1] .. ':info:' .. id
  if redis.call('HGET', info, 'live') == '1' and redis.call('EXISTS', ARGV[1] .. ':lease:' .. id) == 0 then
    table.insert(out, id)
  end
end
return out
"""

_END_TEMPLATE = '{"type":"end","seq":SEQ}'


def _seq_of(entry_id: str) -> tuple[int, int]:
    a, _, b = entry_id.partition("-")
    return int(a), int(b or 0)


class RedisStore:
    """The shared side of a cluster of emostream servers: one Redis, many nodes.

    Args:
        url: ``redis://HOST:PORT/DB`` (``rediss://`` for TLS, ``unix://`` for a socket).
        node_id: this node's name in listings and errors (default: host name and pid).
        lease_s: how long an id stays claimed without renewal (a dead node frees its ids after it).
        retain_s: how long an ended stream stays readable (and a dead live one without a reaper).
        maxlen: messages kept per stream (``MAXLEN ~``: Redis may keep a few more).
        prefix: key prefix (two clusters may share one Redis with different prefixes).
        timeout_s: connect and command timeout (a blocking read adds its own block time).
    """

    def __init__(self, url: str, node_id: str | None = None, *, lease_s: float = 5.0, retain_s: float = 600.0,
                 maxlen: int = 100_000, prefix: str = "emostream", timeout_s: float = 3.0):
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise UsageError(f"--redis needs a redis://HOST:PORT/DB address, got {url!r}")
        if lease_s <= 0 or retain_s <= 0 or maxlen < 1:
            raise UsageError("lease, retention and maxlen must be positive")
        self.url = url
        self.node_id = node_id or f"{os.uname().nodename}-{os.getpid()}"
        self.token = f"{self.node_id}/{uuid.uuid4().hex[:12]}"
        self.lease_ms = int(lease_s * 1000)
        self.retain_ms = int(retain_s * 1000)
        self.maxlen = maxlen
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.block_ms = 1000
        self._r: Any = None
        self._scripts: dict[str, Any] = {}
        self._owned: dict[str, str] = {}  # stream id -> log key, for the streams this process claimed

    # -- connection ------------------------------------------------------------------------

    def _key(self, kind: str, sid: str) -> str:
        return f"{self.prefix}:{kind}:{sid}"

    @property
    def index_key(self) -> str:
        return f"{self.prefix}:index"

    async def connect(self) -> None:
        """Open the client and check Redis answers.

        Raises:
            RedisUnavailable: Redis cannot be reached or refuses the connection.
        """
        try:
            import redis.asyncio as aioredis
        except ImportError:
            raise UsageError("--redis needs the redis package: pip install 'emostream[cluster]'") from None
        # socket_timeout covers a blocking XREAD plus a margin
        self._r = aioredis.from_url(self.url, decode_responses=True, socket_connect_timeout=self.timeout_s,
                                    socket_timeout=self.timeout_s + self.block_ms / 1000,
                                    health_check_interval=30)
        for name, text in (("append", _APPEND), ("end", _END), ("claim", _CLAIM), ("renew", _RENEW),
                           ("release", _RELEASE), ("orphans", _ORPHANS)):
            self._scripts[name] = self._r.register_script(text)
        try:
            await asyncio.wait_for(self._r.ping(), self.timeout_s)
        except Exception as exc:
            await self.close()
            raise RedisUnavailable(f"cannot reach Redis at {self.url}: {_why(exc)}") from None

    async def close(self) -> None:
        """Close the client (safe to call twice)."""
        if self._r is not None:
            r, self._r = self._r, None
            try:
                await r.aclose()
            except Exception:  # closing a broken connection is best effort
                pass

    @property
    def redis(self) -> Any:
        assert self._r is not None, "RedisStore not connected"
        return self._r

    async def health(self) -> dict[str, Any]:
        """``{"redis": "ok", "redis_ms": t}`` or ``{"redis": "unreachable", "redis_error": why}``."""
        t = time.monotonic()
        try:
            await asyncio.wait_for(self.redis.ping(), self.timeout_s)
        except Exception as exc:
            return {"redis": "unreachable", "redis_error": _why(exc)}
        return {"redis": "ok", "redis_ms": round((time.monotonic() - t) * 1000, 2)}

    # -- the id lease ----------------------------------------------------------------------

    async def claim(self, sid: str, hello: str | None = None, info: dict[str, Any] | None = None,
                    started: float | None = None) -> bool:
        """Claim ``sid`` cluster-wide and start its new generation; False while another lease holds it.

        The hello and the listing object may come now or later (:meth:`set_hello`).
        """
        started = time.time() if started is None else started
        log_key = f"{self._key('log', sid)}:{uuid.uuid4().hex[:10]}"
        note = protocol.encode(protocol.error(f"stream {sid!r} ended: its node stopped (lease expired)"))
        ok = await self._scripts["claim"](  # ARGV order: see _CLAIM
            keys=[self._key("lease", sid), self._key("info", sid), self.index_key],
            args=[self.token, self.lease_ms, self.retain_ms, log_key, self.node_id, repr(started), hello or "",
                  json.dumps(info or {}, separators=(",", ":")), sid, note, _END_TEMPLATE, self.maxlen,
                  repr(time.time())])
        if ok:
            self._owned[sid] = log_key
        return bool(ok)

    async def set_hello(self, sid: str, hello: str, info: dict[str, Any] | None = None) -> None:
        """Store the stream's hello frame (and listing object) once the pipeline is known."""
        fields = {"hello": hello}
        if info is not None:
            fields["info"] = json.dumps(info, separators=(",", ":"))
        await self.redis.hset(self._key("info", sid), mapping=fields)

    async def renew(self, sids: Iterable[str]) -> list[str]:
        """Renew the leases of streams this process owns; returns those it lost."""
        sids = list(sids)
        if not sids:
            return []
        keys: list[str] = []
        for sid in sids:
            keys += [self._key("lease", sid), self._key("info", sid), await self._log_key(sid) or self._key("log", sid)]
        lost = await self._scripts["renew"](keys=keys, args=[self.token, self.lease_ms, self.retain_ms + self.lease_ms])
        return [sids[int(i) - 1] for i in lost]

    async def release(self, sid: str) -> None:
        """Give back a claim that did not become a live stream (no messages, no end)."""
        await self._scripts["release"](keys=[self._key("lease", sid), self._key("info", sid), self.index_key],
                                       args=[self.token, sid])
        self._owned.pop(sid, None)

    # -- publishing ------------------------------------------------------------------------

    async def append(self, sid: str, items: list[tuple[int, str]], info: dict[str, Any] | None = None) -> int:
        """Store messages ``(seq, text)`` (seq rising) of a stream this process owns.

        Returns the last seq stored, or -1 when the stream is no longer this process's (the lease
        was lost and the stream ended by another node): stop publishing it.
        """
        log_key = await self._log_key(sid)
        if log_key is None:
            return -1
        args: list[Any] = [self.token, self.maxlen, json.dumps(info, separators=(",", ":")) if info else ""]
        for seq, text in items:
            args += [seq, text]
        return int(await self._scripts["append"](keys=[self._key("info", sid), log_key], args=args))

    async def end(self, sid: str, note: str | None = None, info: dict[str, Any] | None = None) -> int:
        """Append ``end`` (after an optional ``error`` note), mark the stream ended, free the id.

        Returns the end's seq, or -1 when the stream was not live under this process.
        """
        log_key = await self._log_key(sid)
        if log_key is None:
            return -1
        seq = await self._scripts["end"](
            keys=[self._key("info", sid), log_key, self._key("lease", sid), self.index_key],
            args=[self.token, self.retain_ms, note or "", _END_TEMPLATE, self.maxlen, sid,
                  json.dumps(info, separators=(",", ":")) if info else "", repr(time.time())])
        self._owned.pop(sid, None)
        return int(seq)

    async def reap(self) -> list[str]:
        """End every stream whose owner's lease expired (an ``error``, then ``end``); returns their ids."""
        done = []
        for sid in await self._scripts["orphans"](keys=[self.index_key], args=[self.prefix]):
            rs = await self.get(sid)
            if rs is None:
                continue
            note = protocol.encode(protocol.error(
                f"stream {sid!r} ended: node {rs.node} stopped (lease expired)"))
            seq = await self._scripts["end"](
                keys=[self._key("info", sid), rs.log, self._key("lease", sid), self.index_key],
                args=["", self.retain_ms, note, _END_TEMPLATE, self.maxlen, sid, "", repr(time.time())])
            if int(seq) >= 0:
                log.warning("stream %s of node %s ended: lease expired", sid, rs.node)
                done.append(sid)
        return done

    # -- reading ---------------------------------------------------------------------------

    async def _log_key(self, sid: str) -> str | None:
        if sid in self._owned:
            return self._owned[sid]
        return await self.redis.hget(self._key("info", sid), "log")

    async def get(self, sid: str) -> RemoteStream | None:
        """The stream ``sid`` (live or ended and still kept), or None."""
        h = await self.redis.hgetall(self._key("info", sid))
        if not h or "log" not in h:
            return None
        return RemoteStream(id=sid, log=h["log"], hello=h.get("hello") or None, node=h.get("node", "?"),
                            owner=h.get("owner", ""), live=h.get("live") == "1", seq=int(h.get("seq") or 0))

    async def read_since(self, log_key: str, since: int, count: int | None = None
                         ) -> tuple[list[tuple[int, str]], Note | None, str]:
        """Messages after seq ``since`` of one generation, oldest first.

        Returns:
            (items, gap, last_id): ``items`` are (seq, text) with notes (seq of the message they
            precede); ``gap`` when trimming removed messages after ``since``; ``last_id`` the
            entry id to follow from.
        """
        entries = await self.redis.xrange(log_key, min=f"({since}-1", max="+", count=count)
        gap = None
        if entries:
            first = _seq_of(entries[0][0])[0]
            if first > since + 1:  # trimmed by MAXLEN
                gap = Note(since, first)
        last_id = entries[-1][0] if entries else f"{since}-1"
        return [(_seq_of(i)[0], f["m"]) for i, f in entries], gap, last_id

    async def follow(self, sid: str, since: int = 0, *, stop: asyncio.Event | None = None
                     ) -> AsyncIterator[str]:
        """The stream's frames: its hello, every message after ``since``, then live ones until ``end``.

        Works on any node for any stream of the cluster, live or ended. Raises KeyError when the
        id is unknown. A gap in the history (trimmed) yields an ``error`` note before the replay.
        """
        rs = await self.get(sid)
        if rs is None:
            raise KeyError(sid)
        if rs.hello:
            yield rs.hello
        items, gap, last_id = await self.read_since(rs.log, since)
        if gap is not None:
            yield gap.text()
        for seq, text in items:
            yield text
            if text.startswith('{"type":"end"'):
                return
        while stop is None or not stop.is_set():
            got = await self.redis.xread({rs.log: last_id}, block=self.block_ms, count=1000)
            if not got:
                if not await self.redis.exists(rs.log):
                    return  # expired: nothing more will come
                continue
            for _, entries in got:
                for entry_id, fields in entries:
                    last_id = entry_id
                    text = fields["m"]
                    yield text
                    if text.startswith('{"type":"end"'):
                        return

    async def list_streams(self, include_ended: bool = False) -> list[dict[str, Any]]:
        """The cluster's streams as ``GET /streams`` objects, each with its ``node``."""
        ids = await self.redis.zrange(self.index_key, 0, -1)
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for sid in ids:
            pipe.hmget(self._key("info", sid), "info", "live", "seq", "node", "started")
        rows = await pipe.execute()
        out, gone = [], []
        for sid, (info, live, seq, node, started) in zip(ids, rows):
            if live is None:
                gone.append(sid)
                continue
            if live != "1" and not include_ended:
                continue
            obj = json.loads(info) if info else {}
            obj.update({"id": sid, "live": live == "1", "seq": int(seq or 0), "node": node})
            obj.setdefault("started", float(started) if started else None)
            out.append(obj)
        if gone:  # expired streams: drop them from the index
            await self.redis.zrem(self.index_key, *gone)
        return out


def _why(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
