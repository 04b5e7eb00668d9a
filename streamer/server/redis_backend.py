"""The Redis hub backend: many ``emostream serve --redis URL`` nodes share their streams.

Every node publishes each stream it produces (hello, windows, segments, alerts, end, with their
seq) to a Redis Stream of that stream id, claims the id cluster-wide with a lease it renews, and
serves any stream of the cluster by reading it back from Redis (``XRANGE`` from a seq, then
``XREAD BLOCK``). :class:`RedisStore` is the Redis side; :class:`RedisBackend` is the hub's
:class:`~streamer.server.hub.HubBackend` on top of it.

Keys (``P`` is the prefix, ``emostream`` by default; one Redis server or a replicated primary, not
Redis Cluster: the scripts touch keys of several streams)::

    P:lease:ID    the id's lease: the owner's token, PX lease_s, renewed by the owner every lease_s/3
    P:info:ID     hash: log (the current generation's log key), owner, node, live ("1"/"0"), seq
                  (last stored), started, kind, hello (the frame), w:CHANNEL (latest window frame)
    P:log:ID:GEN  the messages: a Redis Stream whose entry ids are ``SEQ-1`` (the message of that
                  seq) and ``SEQ-0`` (a note without seq just before it, such as the error before a
                  forced end); field ``m`` holds the JSON text frame; trimmed with ``MAXLEN ~``
    P:index       sorted set of stream ids by start time (the cluster's GET /streams)

Entry ids derived from seq make ``since`` replay one ``XRANGE`` and appends idempotent (a message
at or below the stored seq is skipped, so a batch retried after a lost answer adds nothing twice).
A new stream under an id that ended gets a new log key (a new generation): subscribers still
reading the old one finish it undisturbed. When an owner dies, its lease expires; any node's reaper
(run every second) or the next claim of the id appends an ``error`` and an ``end`` to the stream,
which every follower reads like any other message. Live keys expire ``retain_s`` after the owner's
last renewal, ended ones ``retain_s`` after their end.

The hub calls the backend's synchronous methods for every message on the event loop: they only
queue. One writer task sends the queue in order, in pipelined batches; while Redis is unreachable
it keeps the queue (bounded), the node's own calls go on being labelled and served locally,
``health()`` reports it (``/health`` 503) and the streams' subscribers are told.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import time
import uuid
from typing import Any, AsyncIterator, Callable, Iterable
from urllib.parse import urlsplit

from streamer import events
from streamer.errors import ServiceUnavailable, UsageError
from streamer.server.hub import window_summary
from streamer.server.memory import MemoryBackend
from streamer.server.message import Message

__all__ = ["RedisBackend", "RedisStore", "RedisUnavailable", "RemoteStream", "check_redis"]

log = logging.getLogger("emostream.redis")


class RedisUnavailable(ServiceUnavailable):
    """Redis cannot be reached (a missing service: exit 4)."""


# Appends a batch to a stream this process owns. KEYS: info, log. ARGV: owner token, maxlen, fields
# to set on the info hash as JSON ("" for none), then seq, text pairs in order. Returns the stored
# seq, or -1 when this generation is not live under this owner (reaped after a lost lease).
_APPEND = """
local info, lg = KEYS[1], KEYS[2]
if redis.call('HGET', info, 'owner') ~= ARGV[1] or redis.call('HGET', info, 'live') ~= '1'
   or redis.call('HGET', info, 'log') ~= lg then
  return -1
end
local last = tonumber(redis.call('HGET', info, 'seq') or '0')
for i = 4, #ARGV, 2 do
  local seq = tonumber(ARGV[i])
  if seq > last then  -- a batch retried after a lost answer adds nothing twice
    redis.call('XADD', lg, 'MAXLEN', '~', ARGV[2], seq .. '-1', 'm', ARGV[i + 1])
    last = seq
  end
end
redis.call('HSET', info, 'seq', last)
if ARGV[3] ~= '' then
  for k, v in pairs(cjson.decode(ARGV[3])) do redis.call('HSET', info, k, v) end
end
return last
"""

# The owner ends its stream (its ``end`` message already appended). KEYS: info, log, lease.
# ARGV: token, retain ms, now. Returns 1, or 0 when this generation was not live under this owner.
_FINISH = """
local info, lg, lease = KEYS[1], KEYS[2], KEYS[3]
if redis.call('HGET', info, 'owner') ~= ARGV[1] or redis.call('HGET', info, 'live') ~= '1'
   or redis.call('HGET', info, 'log') ~= lg then
  return 0
end
redis.call('HSET', info, 'live', '0', 'ended', ARGV[3])
if redis.call('GET', lease) == ARGV[1] then redis.call('DEL', lease) end
redis.call('PEXPIRE', info, ARGV[2])
redis.call('PEXPIRE', lg, ARGV[2])
return 1
"""

# Ends a stream whose owner died: only when it is still live and its lease is gone, appends an
# ``error`` note and an ``end``. KEYS: info, log, lease. ARGV: retain ms, note text, end template
# (SEQ stands for the end's seq), maxlen, now. Returns the end's seq, or -1 when nothing was done.
_REAP = """
local info, lg, lease = KEYS[1], KEYS[2], KEYS[3]
if redis.call('HGET', info, 'live') ~= '1' or redis.call('EXISTS', lease) == 1 then return -1 end
local seq = tonumber(redis.call('HGET', info, 'seq') or '0') + 1
redis.call('XADD', lg, 'MAXLEN', '~', ARGV[4], seq .. '-0', 'm', ARGV[2])
redis.call('XADD', lg, 'MAXLEN', '~', ARGV[4], seq .. '-1', 'm', (string.gsub(ARGV[3], 'SEQ', tostring(seq))))
redis.call('HSET', info, 'live', '0', 'seq', seq, 'ended', ARGV[5])
redis.call('PEXPIRE', info, ARGV[1])
redis.call('PEXPIRE', lg, ARGV[1])
return seq
"""

# Claims an id and opens its new generation. KEYS: lease, info, index. ARGV: token, lease ms,
# retain ms, new log key, node name, started, stream id, note text, end template. Fails (0) while a
# lease holds the id. A stream still marked live without a lease (its owner died, not yet reaped)
# is ended first (note, end), so its followers finish before the id starts a new generation.
_CLAIM = """
local lease, info, index = KEYS[1], KEYS[2], KEYS[3]
if redis.call('SET', lease, ARGV[1], 'NX', 'PX', ARGV[2]) == false then return 0 end
if redis.call('HGET', info, 'live') == '1' then
  local old = redis.call('HGET', info, 'log')
  local seq = tonumber(redis.call('HGET', info, 'seq') or '0') + 1
  redis.call('XADD', old, seq .. '-0', 'm', ARGV[8])
  redis.call('XADD', old, seq .. '-1', 'm', (string.gsub(ARGV[9], 'SEQ', tostring(seq))))
  redis.call('PEXPIRE', old, ARGV[3])
end
redis.call('DEL', info)
redis.call('HSET', info, 'log', ARGV[4], 'owner', ARGV[1], 'node', ARGV[5], 'live', '1', 'seq', 0,
           'started', ARGV[6])
redis.call('PEXPIRE', info, ARGV[3] + ARGV[2])
redis.call('ZADD', index, ARGV[6], ARGV[7])
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

_NOTE_OWNER_GONE = "stream {sid!r} ended: node {node} stopped (its lease expired)"


def _entry_seq(entry_id: str) -> tuple[int, int]:
    a, _, b = entry_id.partition("-")
    return int(a), int(b or 0)


def _why(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _outage_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean Redis is unreachable (as opposed to a refused command)."""
    from redis.exceptions import ConnectionError as RConnectionError
    from redis.exceptions import TimeoutError as RTimeoutError

    return (RConnectionError, RTimeoutError, OSError, asyncio.TimeoutError)


def check_redis(url: str, timeout_s: float = 3.0) -> None:
    """Check before serving that Redis at ``url`` answers (the command line's start-up check).

    Raises:
        UsageError: not a Redis address, or the redis package is missing.
        RedisUnavailable: Redis cannot be reached.
    """
    _check_url(url)
    try:
        import redis
    except ImportError:
        raise UsageError("--redis needs the redis package: pip install 'emostream[cluster]'") from None
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    except ValueError as exc:  # a bad port, database number or option in the address
        raise UsageError(f"bad --redis address {_safe_url(url)}: {_why(exc)}") from None
    try:
        client.ping()
    except Exception as exc:
        raise RedisUnavailable(f"cannot reach Redis at {_safe_url(url)}: {_why(exc)}") from None
    finally:
        client.close()


def _check_url(url: str) -> None:
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise UsageError(f"--redis needs an address like redis://HOST:6379/0, got {_safe_url(url)!r}")


def _safe_url(url: str) -> str:
    """The address without its password (never printed)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # a malformed address: say nothing of it but its scheme
        return url.split(":", 1)[0] + "://..."
    if password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return parts._replace(netloc=netloc).geturl()
    return url


class RemoteStream:
    """One stream as Redis knows it (a snapshot of its info hash)."""

    __slots__ = ("id", "log", "hello", "node", "owner", "live", "seq", "fields")

    def __init__(self, sid: str, fields: dict[str, str]):
        self.id = sid
        self.fields = fields
        self.log = fields["log"]
        self.hello = fields.get("hello") or None
        self.node = fields.get("node", "?")
        self.owner = fields.get("owner", "")
        self.live = fields.get("live") == "1"
        self.seq = int(fields.get("seq") or 0)

    def row(self) -> dict[str, Any]:
        """The stream as ``GET /streams`` lists it (the fields a node other than its owner knows)."""
        hello = json.loads(self.hello) if self.hello else {}
        started = float(self.fields.get("started") or hello.get("started") or 0)
        keys = sorted((k for k in self.fields if k.startswith("w:")), key=lambda k: int(k[2:] or 0))
        current = [window_summary(json.loads(self.fields[k])) for k in keys]
        return {"id": self.id, "kind": self.fields.get("kind", "ingest"), "source": hello.get("source"),
                "started": round(started, 3),
                "started_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                "live": self.live, "seq": self.seq, "channels": hello.get("channels"), "current": current,
                "node": self.node}


class RedisStore:
    """The Redis side of a cluster: streams, leases and the listing, for one node.

    Args:
        url: ``redis://HOST:PORT/DB`` (``rediss://`` for TLS, ``unix://PATH`` for a socket).
        node_id: this node's name in listings and errors (default: host name and pid).
        lease_s: how long an id stays claimed without renewal (a dead node's ids are free after it).
        retain_s: how long an ended stream stays readable.
        maxlen: messages kept per stream (``MAXLEN ~``: Redis may keep a few more).
        prefix: key prefix (clusters sharing one Redis use different prefixes).
        timeout_s: connect and command timeout (a blocking read adds its block time).
    """

    def __init__(self, url: str, node_id: str | None = None, *, lease_s: float = 5.0, retain_s: float = 600.0,
                 maxlen: int = 100_000, prefix: str = "emostream", timeout_s: float = 3.0):
        _check_url(url)
        if lease_s <= 0 or retain_s <= 0 or maxlen < 1:
            raise UsageError("lease, retention and maxlen must be positive")
        self.url = url
        self.node_id = node_id or f"{os.uname().nodename}-{os.getpid()}"
        # unique per process: a restarted node with the same name does not inherit old leases
        self.token = f"{self.node_id}/{uuid.uuid4().hex[:12]}"
        self.lease_ms = int(lease_s * 1000)
        self.retain_ms = int(retain_s * 1000)
        self.maxlen = maxlen
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.block_ms = 1000
        self._r: Any = None
        self._scripts: dict[str, Any] = {}
        self.owned: dict[str, str] = {}  # stream id -> log key, for the ids this process claimed

    def key(self, kind: str, sid: str) -> str:
        """The Redis key of ``kind`` (lease, info) for stream ``sid``."""
        return f"{self.prefix}:{kind}:{sid}"

    @property
    def index_key(self) -> str:
        return f"{self.prefix}:index"

    # -- connection ------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the client (on the running loop) and check that Redis answers.

        Raises:
            RedisUnavailable: Redis cannot be reached.
        """
        try:
            import redis.asyncio as aioredis
        except ImportError:
            raise UsageError("--redis needs the redis package: pip install 'emostream[cluster]'") from None
        # the socket timeout covers a blocking XREAD plus the command timeout
        self._r = aioredis.from_url(self.url, decode_responses=True, socket_connect_timeout=self.timeout_s,
                                    socket_timeout=self.timeout_s + self.block_ms / 1000)
        for name, text in (("append", _APPEND), ("finish", _FINISH), ("reap", _REAP), ("claim", _CLAIM),
                           ("renew", _RENEW), ("release", _RELEASE), ("orphans", _ORPHANS)):
            self._scripts[name] = self._r.register_script(text)
        try:
            await asyncio.wait_for(self._r.ping(), self.timeout_s)
        except Exception as exc:
            await self.close()
            raise RedisUnavailable(f"cannot reach Redis at {_safe_url(self.url)}: {_why(exc)}") from None

    @property
    def connected(self) -> bool:
        return self._r is not None

    async def close(self) -> None:
        """Close the client (safe to call twice)."""
        r, self._r = self._r, None
        if r is not None:
            try:
                await r.aclose()
            except Exception:  # closing a broken connection is best effort
                pass

    @property
    def redis(self) -> Any:
        if self._r is None:
            raise RedisUnavailable("not connected to Redis")
        return self._r

    async def ping_ms(self) -> float:
        """One PING's round trip in milliseconds (raises when Redis does not answer in time)."""
        t = time.monotonic()
        await asyncio.wait_for(self.redis.ping(), self.timeout_s)
        return (time.monotonic() - t) * 1000

    # -- the id lease and the owner's writes -----------------------------------------------

    async def claim(self, sid: str, started: float | None = None) -> bool:
        """Claim ``sid`` cluster-wide and open its new generation; False while a lease holds it."""
        log_key = f"{self.key('log', sid)}:{uuid.uuid4().hex[:10]}"
        note = events.encode(events.Error(f"stream {sid!r} ended: its node stopped (its lease expired)"))
        ok = await self._scripts["claim"](
            keys=[self.key("lease", sid), self.key("info", sid), self.index_key],
            args=[self.token, self.lease_ms, self.retain_ms, log_key, self.node_id,
                  repr(time.time() if started is None else started), sid, note, _END_TEMPLATE])
        if ok:
            self.owned[sid] = log_key
        return bool(ok)

    async def append(self, sid: str, log_key: str, items: list[tuple[int, str]],
                     fields: dict[str, str] | None = None, client: Any = None) -> Any:
        """Store messages ``(seq, text)`` (seq rising) of generation ``log_key`` of a stream claimed
        here, and set ``fields`` on its info hash. Returns the last seq stored, or -1 when that
        generation is no longer this process's (its lease was lost and another node ended it).
        With ``client`` a pipeline, the call is queued on it."""
        args: list[Any] = [self.token, self.maxlen, json.dumps(fields, separators=(",", ":")) if fields else ""]
        for seq, text in items:
            args += [seq, text]
        return await self._scripts["append"](keys=[self.key("info", sid), log_key], args=args, client=client)

    async def finish(self, sid: str, log_key: str, client: Any = None) -> Any:
        """Mark generation ``log_key`` of a stream claimed here ended (its ``end`` already
        appended) and free the id; 1, or 0 when it was not live under this process."""
        return await self._scripts["finish"](keys=[self.key("info", sid), log_key, self.key("lease", sid)],
                                             args=[self.token, self.retain_ms, repr(time.time())], client=client)

    async def release(self, sid: str) -> None:
        """Give back a claim that never became a stream (nothing stored, nothing listed)."""
        self.owned.pop(sid, None)
        await self._scripts["release"](keys=[self.key("lease", sid), self.key("info", sid), self.index_key],
                                       args=[self.token, sid])

    async def renew(self, sids: Iterable[str]) -> list[str]:
        """Renew the leases of streams claimed here; returns those this process lost."""
        sids = [s for s in sids if s in self.owned]
        if not sids:
            return []
        keys: list[str] = []
        for sid in sids:
            keys += [self.key("lease", sid), self.key("info", sid), self.owned[sid]]
        lost = await self._scripts["renew"](keys=keys, args=[self.token, self.lease_ms, self.retain_ms + self.lease_ms])
        return [sids[int(i) - 1] for i in lost]

    async def reap(self) -> list[str]:
        """End every stream whose owner's lease expired (an ``error``, then ``end``); their ids."""
        done = []
        for sid in await self._scripts["orphans"](keys=[self.index_key], args=[self.prefix]):
            rs = await self.get(sid)
            if rs is None:
                continue
            note = events.encode(events.Error(_NOTE_OWNER_GONE.format(sid=sid, node=rs.node)))
            seq = await self._scripts["reap"](
                keys=[self.key("info", sid), rs.log, self.key("lease", sid)],
                args=[self.retain_ms, note, _END_TEMPLATE, self.maxlen, repr(time.time())])
            if int(seq) >= 0:
                log.warning("stream %s of node %s ended here: its lease expired", sid, rs.node)
                done.append(sid)
        return done

    # -- reading ---------------------------------------------------------------------------

    async def get(self, sid: str) -> RemoteStream | None:
        """The stream ``sid`` (live, or ended and still kept), or None."""
        fields = await self.redis.hgetall(self.key("info", sid))
        return RemoteStream(sid, fields) if fields and "log" in fields else None

    async def read_since(self, log_key: str, since: int, count: int | None = None
                         ) -> tuple[list[tuple[int | None, str]], int | None, str]:
        """Messages after seq ``since`` of one generation, oldest first.

        Returns:
            (items, gap, last_id): ``items`` are (seq, text), seq None for a note; ``gap`` the
            first seq after ``since`` that trimming removed (else None); ``last_id`` the entry
            id to follow from.
        """
        entries = await self.redis.xrange(log_key, min=f"({since}-1", max="+", count=count)
        gap = None
        if entries and _entry_seq(entries[0][0])[0] > since + 1:
            gap = since + 1
        last_id = entries[-1][0] if entries else f"{since}-1"
        return [_item(i, f) for i, f in entries], gap, last_id

    async def follow(self, sid: str, log_key: str, last_id: str) -> AsyncIterator[tuple[str, int | None, str]]:
        """Entries of generation ``log_key`` of ``sid`` after ``last_id`` as they are added:
        (entry id, seq or None, text), until ``end`` (or until the stream expired)."""
        while True:
            got = await self.redis.xread({log_key: last_id}, block=self.block_ms, count=1000)
            if not got:
                # a log without entries does not exist yet: the info hash says whether it will
                if await self.redis.hget(self.key("info", sid), "log") != log_key and \
                        not await self.redis.exists(log_key):
                    return
                continue
            for _, entries in got:
                for entry_id, fields in entries:
                    last_id = entry_id
                    seq, text = _item(entry_id, fields)
                    yield entry_id, seq, text
                    if seq is not None and text.startswith('{"type":"end"'):
                        return

    async def list_streams(self, include_ended: bool = True) -> list[RemoteStream]:
        """Every stream Redis holds (started: its hello stored), oldest first."""
        ids = await self.redis.zrange(self.index_key, 0, -1)
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for sid in ids:
            pipe.hgetall(self.key("info", sid))
        rows = await pipe.execute()
        out, gone = [], []
        for sid, fields in zip(ids, rows):
            if not fields or "log" not in fields:
                gone.append(sid)
            elif fields.get("hello") and (include_ended or fields.get("live") == "1"):
                out.append(RemoteStream(sid, fields))
        if gone:  # expired streams leave the index
            await self.redis.zrem(self.index_key, *gone)
        return out


def _item(entry_id: str, fields: dict[str, str]) -> tuple[int | None, str]:
    seq, sub = _entry_seq(entry_id)
    return (seq if sub == 1 else None), fields["m"]


class RedisBackend:
    """:class:`~streamer.server.hub.HubBackend` sharing streams between nodes through Redis.

    Args:
        url: the Redis address (``redis://HOST:6379/0``).
        node_id: this node's name (``--node-id``; listed with each stream, named in errors).
        history: messages kept per stream, in this process for its own streams and in Redis.
        lease_s, retain_s, prefix, timeout_s: see :class:`RedisStore`.
        max_backlog: messages queued while Redis is unreachable; beyond it the oldest are dropped
            (other nodes then miss them; this node's own subscribers never do).

    Attributes:
        on_notice: ``(stream_id or None, text)`` -> None: tells subscribers of this node's streams
            (one, or every live one for None) about Redis (outage, recovery, a lost lease). The
            server wires it to its streams' ``error``.
    """

    name = "redis"

    def __init__(self, url: str, node_id: str | None = None, *, history: int = 100_000, lease_s: float = 5.0,
                 retain_s: float = 600.0, prefix: str = "emostream", timeout_s: float = 3.0,
                 max_backlog: int = 200_000):
        self.store = RedisStore(url, node_id, lease_s=lease_s, retain_s=retain_s, maxlen=max(1, history),
                                prefix=prefix, timeout_s=timeout_s)
        self.node_id = self.store.node_id
        self.local = MemoryBackend(history=history)  # this node's own streams, for sync replay
        self.lease_s = lease_s
        self.max_backlog = max_backlog
        self.on_notice: Callable[[str | None, str], None] | None = None
        self._ops: collections.deque[tuple[Any, ...]] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._published: dict[str, str] = {}  # this node's streams written to Redis -> their log key
        self._ok = True                      # Redis answered the last write / renewal
        self._problem = ""
        self._dropped = 0
        self._closed = False
        self._connecting: asyncio.Lock | None = None

    # -- life cycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and start the writer and the lease keeper (done by the first call that needs them).

        Raises:
            RedisUnavailable: Redis cannot be reached.
        """
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self.store.connected or self._closed:
                return
            await self.store.connect()
            self._wake, self._idle = asyncio.Event(), asyncio.Event()
            self._idle.set()
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._writer()), loop.create_task(self._keeper())]

    async def close(self) -> None:
        """Send what is queued (a few seconds at most), stop the tasks, disconnect; safe twice."""
        if self._closed:
            return
        self._closed = True
        if self._idle is not None and self._ops and self._ok:
            try:
                await asyncio.wait_for(self._idle.wait(), self.store.timeout_s)
            except asyncio.TimeoutError:
                log.warning("%d messages not sent to Redis at shutdown", len(self._ops))
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.store.close()

    def attach(self, hub: Any) -> None:
        """Tell the subscribers of ``hub``'s own live streams about Redis (outage, recovery, a lost
        lease) with an ``error`` frame each (see :attr:`on_notice`)."""
        def notice(sid: str | None, text: str) -> None:
            for stream in list(hub.streams.values()):
                if stream.kind != "remote" and not stream.ended and sid in (None, stream.id):
                    stream.error(text)
        self.on_notice = notice

    # -- ids -------------------------------------------------------------------------------

    async def claim(self, stream_id: str) -> bool:
        """Lease ``stream_id`` cluster-wide; False when a live stream anywhere holds it.

        Raises:
            RedisUnavailable: Redis does not answer (the id cannot be checked cluster-wide).
        """
        await self.open()
        try:
            if not await self.local.claim(stream_id):
                return False
            await self._flushed(stream_id)
            ok = await self.store.claim(stream_id)
        except _outage_errors() as exc:
            await self.local.release(stream_id)
            raise RedisUnavailable(f"cannot claim stream id {stream_id!r}: Redis unreachable ({_why(exc)})") from None
        if not ok:
            await self.local.release(stream_id)
        return ok

    async def _flushed(self, stream_id: str) -> None:
        """Wait (a few seconds at most) until nothing of ``stream_id`` waits to be written: the
        tail of an ended stream goes to its own generation before the id starts a new one."""
        deadline = time.monotonic() + self.store.timeout_s
        while any(op[1] == stream_id for op in self._ops) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def release(self, stream_id: str) -> None:
        """Give back a lease that never became a stream."""
        await self.local.release(stream_id)
        try:
            await self.store.release(stream_id)
        except _outage_errors() as exc:  # the lease expires on its own
            log.warning("could not release stream id %s: %s", stream_id, _why(exc))

    # -- this node's streams (synchronous: queued for the writer) --------------------------

    def start(self, stream_id: str, hello: Message, kind: str) -> None:
        """A stream this node produces begins; an id claimed here goes to Redis.

        A ``source`` stream (``--file``/``--mic``, called ``main`` on every node) is not claimed
        and stays local: every node may have its own.
        """
        self.local.start(stream_id, hello, kind)
        log_key = self.store.owned.get(stream_id)
        if log_key is not None:
            self._published[stream_id] = log_key
            self._queue(("append", stream_id, log_key, None, {"hello": hello.text, "kind": kind}))

    def append(self, stream_id: str, message: Message) -> None:
        """Keep a numbered message here and queue it for Redis."""
        self.local.append(stream_id, message)
        log_key = self._published.get(stream_id)
        if log_key is not None and message.seq is not None:
            # the latest window per channel goes on the info hash too (GET /streams on other nodes)
            field = None
            if message.type == "window":
                field = f"w:{message.wire().get('channel', 0)}"
            self._queue(("append", stream_id, log_key, (message.seq, message.text), field))

    def read_since(self, stream_id: str, since: int) -> tuple[list[Message], int | None]:
        """This node's own stream from its local history (no network on the event loop)."""
        return self.local.read_since(stream_id, since)

    def end(self, stream_id: str) -> None:
        """The stream's ``end`` was appended: mark it ended in Redis and free the id."""
        self.local.end(stream_id)
        log_key = self._published.pop(stream_id, None)
        if log_key is not None:
            self._queue(("finish", stream_id, log_key))

    def forget(self, stream_id: str) -> None:
        """Drop the local history (Redis expires its copy ``retain_s`` after the end)."""
        self.local.forget(stream_id)

    def _queue(self, op: tuple[Any, ...]) -> None:
        if len(self._ops) >= self.max_backlog:
            # only while Redis is out: other nodes miss the oldest message, this node's subscribers do not
            for i, old in enumerate(self._ops):
                if old[0] == "append" and old[3] is not None:
                    del self._ops[i]
                    self._dropped += 1
                    break
        self._ops.append(op)
        if self._wake is not None and self._idle is not None:
            self._wake.set()
            self._idle.clear()

    async def _writer(self) -> None:
        """Send queued operations in order, in one pipeline per round."""
        assert self._wake is not None and self._idle is not None
        outage = _outage_errors()
        from redis.exceptions import RedisError

        delay = 0.2
        while True:
            if not self._ops:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            n = len(self._ops)
            try:
                await self._send([self._ops[i] for i in range(n)])
            except outage as exc:
                self._trouble(f"Redis unreachable ({_why(exc)})")
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)
                continue  # the batch stays queued: appends are idempotent, so is finish
            except RedisError as exc:  # a refused command is a bug: never retried forever
                log.error("Redis refused a write; %d operations dropped: %s", n, _why(exc))
            for _ in range(n):
                self._ops.popleft()
            delay = 0.2
            self._recovered()

    async def _send(self, batch: list[tuple[Any, ...]]) -> None:
        """One pipeline, in queue order: consecutive messages of a generation in one script call."""
        pipe = self.store.redis.pipeline(transaction=False)
        appended: list[str] = []  # the stream id of each pipelined call (to act on a -1)
        finished: list[tuple[str, str]] = []
        i = 0
        while i < len(batch):
            kind, sid, log_key = batch[i][:3]
            if kind == "finish":
                await self.store.finish(sid, log_key, client=pipe)
                appended.append("")
                finished.append((sid, log_key))
                i += 1
                continue
            items: list[tuple[int, str]] = []
            fields: dict[str, str] = {}
            while (i < len(batch) and batch[i][0] == "append" and batch[i][2] == log_key and len(items) < 500):
                _, _, _, item, extra = batch[i]
                if item is None:
                    fields.update(extra)  # hello, kind
                else:
                    items.append(item)
                    if extra is not None:
                        fields[extra] = item[1]
                i += 1
            await self.store.append(sid, log_key, items, fields, client=pipe)
            appended.append(sid)
        results = await pipe.execute()
        for sid, res in zip(appended, results):
            if sid and int(res) < 0 and sid in self._published:
                self._lost(sid)
        for sid, log_key in finished:
            if self.store.owned.get(sid) == log_key:
                del self.store.owned[sid]

    def _lost(self, sid: str) -> None:
        """This node no longer owns ``sid`` in Redis: keep labelling it here, stop publishing it."""
        log_key = self._published.pop(sid, None)
        if self.store.owned.get(sid) == log_key:
            del self.store.owned[sid]
        log.error("stream %s: lease lost; no longer published to Redis", sid)
        self._notice(sid, f"warning: stream {sid!r} is no longer shared with the cluster (its lease was lost: "
                          "Redis was out too long or lost its data); it is still labelled on this node")

    def _notice(self, sid: str | None, text: str) -> None:
        if self.on_notice is not None:
            try:
                self.on_notice(sid, text)
            except Exception:  # telling subscribers must not break the writer
                log.exception("on_notice failed")

    def _trouble(self, why: str) -> None:
        if self._ok:
            self._ok = False
            self._problem = why
            log.error("%s: live calls go on being labelled here; other nodes do not see them until it is back", why)
            self._notice(None, f"warning: {why}: this call is still labelled on node {self.node_id}; "
                               "other nodes see it again when Redis is back")

    def _recovered(self) -> None:
        if not self._ok:
            self._ok = True
            self._problem = ""
            log.warning("Redis reachable again")
            self._notice(None, "warning: Redis reachable again: this call is shared with the cluster again")

    async def _keeper(self) -> None:
        """Renew this node's leases (every lease_s / 3) and end dead nodes' streams (every second)."""
        outage = _outage_errors()
        from redis.exceptions import RedisError

        period = max(0.05, min(1.0, self.lease_s / 3))
        last_reap = 0.0
        while True:
            await asyncio.sleep(period)
            try:
                for sid in await self.store.renew(list(self.store.owned)):
                    if sid in self._published:
                        self._lost(sid)
                    else:
                        self.store.owned.pop(sid, None)
                if time.monotonic() - last_reap >= 1.0:
                    last_reap = time.monotonic()
                    await self.store.reap()
                if not self._ops:
                    self._recovered()
            except outage as exc:
                self._trouble(f"Redis unreachable ({_why(exc)})")
            except RedisError as exc:
                log.error("lease renewal failed: %s", _why(exc))

    # -- other nodes' streams --------------------------------------------------------------

    async def list_streams(self) -> list[dict[str, Any]]:
        """The streams of other nodes (and of earlier runs of this one) that Redis holds."""
        await self.open()
        try:
            streams = await self.store.list_streams()
        except _outage_errors() as exc:
            self._trouble(f"Redis unreachable ({_why(exc)})")
            return []
        return [rs.row() for rs in streams if rs.owner != self.store.token]

    async def lookup(self, stream_id: str) -> Message | None:
        """The hello of a stream another node produces (or produced), or None.

        Raises:
            RedisUnavailable: Redis does not answer.
        """
        await self.open()
        try:
            rs = await self.store.get(stream_id)
        except _outage_errors() as exc:
            raise RedisUnavailable(f"stream {stream_id!r}: Redis unreachable ({_why(exc)})") from None
        if rs is None or rs.hello is None or rs.owner == self.store.token:
            return None
        return Message(None, text=rs.hello)

    async def follow(self, stream_id: str, after: int) -> AsyncIterator[Message]:
        """Another node's stream after seq ``after``: replay from Redis, then live, until ``end``.

        A dead owner's stream ends with the reaper's ``error`` and ``end``; a trimmed history
        starts with an ``error`` naming what is missing. While Redis is unreachable it waits,
        after one ``error`` starting with ``warning:``, and resumes where it was.
        """
        await self.open()
        outage = _outage_errors()
        rs = await self.store.get(stream_id)
        if rs is None:
            return
        items, gap, last_id = await self.store.read_since(rs.log, after)
        if gap is not None and items:
            first = next((s for s, _ in items if s is not None), gap)
            yield Message(None, text=events.encode(events.Error(
                f"history no longer holds seq {gap} to {first - 1}; replaying from {first}")))
        for seq, text in items:
            yield Message(seq, text=text)
            if seq is not None and text.startswith('{"type":"end"'):
                return
        delay, warned = 0.2, False
        while True:
            try:
                async for entry_id, seq, text in self.store.follow(stream_id, rs.log, last_id):
                    last_id = entry_id
                    if warned:
                        warned = False
                        yield Message(None, text=events.encode(events.Error(
                            "warning: Redis reachable again: the stream goes on")))
                    yield Message(seq, text=text)
                return
            except outage as exc:
                if not warned:
                    warned = True
                    yield Message(None, text=events.encode(events.Error(
                        f"warning: Redis unreachable ({_why(exc)}): waiting for the stream to go on")))
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)

    async def health(self) -> dict[str, Any]:
        """``ok`` when Redis answers a PING in time (and the writer is not stuck)."""
        out: dict[str, Any] = {"backend": self.name, "node": self.node_id}
        try:
            await self.open()
            out["redis_ms"] = round(await self.store.ping_ms(), 2)
            out["redis"] = "ok"
        except (RedisUnavailable, *_outage_errors()) as exc:
            out.update(redis="unreachable", redis_error=_why(exc))
        ok = out["redis"] == "ok" and (self._ok or not self._ops)
        if out["redis"] == "ok" and not ok:
            out["redis_error"] = self._problem
        if not ok:  # the reason /health gives for its 503
            out["error"] = f"Redis at {_safe_url(self.store.url)}: {out['redis_error']}"
        out.update(ok=ok, published=len(self._published), backlog=len(self._ops))
        if self._dropped:
            out["dropped_while_out"] = self._dropped
        return out
