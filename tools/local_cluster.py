"""A cluster on loopback for tests, benchmarks and trying it out: redis-server, N nodes, HAProxy.

Every part is the real program: ``redis-server`` and ``haproxy`` from Debian's packages, each node an
``emostream serve --redis ... --node-id nodeN`` process. HAProxy's configuration is rendered from
the shipped docs/deploy/haproxy.cfg with loopback ports (see :func:`render_haproxy`).

    python -m tools.local_cluster --nodes 3          # prints the addresses; Ctrl-C stops everything

In Python::

    with RedisServer() as redis, Cluster(redis.url, nodes=3) as cluster:
        cluster.balancer_port, cluster.node_ports, cluster.kill(0)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HAPROXY_CFG = ROOT / "docs" / "deploy" / "haproxy.cfg"

__all__ = ["free_port", "wait_port", "RedisServer", "Node", "Cluster", "render_haproxy", "HAPROXY_CFG"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until something accepts connections on 127.0.0.1:port (or the process exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when the harness dies, even by kill -9, so a
    test or benchmark killed by a timeout leaves no redis-server, node or HAProxy behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux/glibc: the finally blocks still stop them
        pass


def _stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, wait: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class RedisServer:
    """``redis-server`` on a free loopback port, without persistence; stopped on exit."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--protected-mode", "yes", "--loglevel", "warning"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)
        wait_port(self.port, 20, self.proc)
        return self

    def stop(self) -> None:
        _stop(self.proc)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Node:
    """One ``emostream serve --redis URL --node-id NAME`` process on a free port."""

    def __init__(self, redis_url: str | None, name: str, port: int | None = None, extra: list[str] | None = None,
                 env: dict[str, str] | None = None, log_dir: str | None = None):
        self.redis_url, self.name = redis_url, name
        self.port = port or free_port()
        self.extra = extra or []
        self.env = env
        self.log_path = Path(log_dir or tempfile.gettempdir()) / f"emostream-{name}-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> "Node":
        """Spawn the process and wait until it listens."""
        self.spawn()
        self.wait(timeout)
        return self

    def spawn(self) -> None:
        """Spawn the process (see :meth:`wait`)."""
        cmd = [sys.executable, "-m", "streamer", "serve", "--port", str(self.port), *self.extra]
        if self.redis_url:
            cmd += ["--redis", self.redis_url, "--node-id", self.name]
        env = dict(os.environ, **(self.env or {}))
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent)

    def wait(self, timeout: float = 120.0) -> None:
        """Wait until the node listens (raises with its output when it exits first)."""
        assert self.proc is not None
        try:
            wait_port(self.port, timeout, self.proc)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{self.name}: {exc}\n{self.log()[-2000:]}") from None

    def health(self) -> tuple[int, str]:
        """(status, body) of GET /health."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: the node dies without a word (its leases expire)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        _stop(self.proc)
        if getattr(self, "_log", None) is not None:
            self._log.close()


def render_haproxy(nodes: list[tuple[str, int]], port: int, *, source: Path = HAPROXY_CFG,
                   stats_port: int | None = None) -> str:
    """The shipped haproxy.cfg with loopback ports: its ``server`` lines replaced by ``nodes``.

    The shipped file lists three example servers (``server node1 10.0.0.11:8765 check``) and binds
    ``*:80``; both are rewritten, and ``user``/``group`` are dropped. The rest
    (routing, checks, timeouts) is used as shipped.
    """
    out: list[str] = []
    in_group = False  # consecutive example ``server`` lines form one group: replaced by our nodes
    for line in source.read_text().splitlines():
        m = re.match(r"^(\s*)server\s+\S+\s+\S+(.*)$", line)
        if m:
            if not in_group:  # the group's first line gives the options (check, inter, ...)
                out += [f"{m.group(1)}server {name} 127.0.0.1:{p}{m.group(2)}" for name, p in nodes]
            in_group = True
            continue
        in_group = False
        if re.match(r"^\s*(user|group)\s", line):
            continue  # on loopback it runs as whoever runs the test (and dies with it: see _die_with_parent)
        if line.strip().startswith("bind "):
            line = re.sub(r"bind\s+\S+", f"bind 127.0.0.1:{port}", line, count=1)
        out.append(line)
    if stats_port:
        out += ["", "frontend stats", f"    bind 127.0.0.1:{stats_port}", "    mode http",
                "    stats enable", "    stats uri /"]
    return "\n".join(out) + "\n"


class Cluster:
    """N nodes sharing one Redis behind HAProxy, all on loopback.

    Args:
        redis_url: the Redis every node uses.
        nodes: how many nodes.
        balancer: start HAProxy in front (rendered from docs/deploy/haproxy.cfg).
        extra: more ``serve`` options for every node.
        env: environment for the nodes (e.g. EMOSTREAM_MODEL).
    """

    def __init__(self, redis_url: str | None, nodes: int = 3, *, balancer: bool = True,
                 extra: list[str] | None = None, env: dict[str, str] | None = None):
        self.redis_url = redis_url
        self.dir = tempfile.mkdtemp(prefix="emostream-cluster-")
        self.nodes = [Node(redis_url, f"node{i + 1}", extra=extra, env=env, log_dir=self.dir) for i in range(nodes)]
        self.balancer = balancer
        self.balancer_port = free_port() if balancer else None
        self.haproxy: subprocess.Popen | None = None

    @property
    def node_ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    def start(self) -> "Cluster":
        try:
            for n in self.nodes:  # all spawned first: each loads the model meanwhile
                n.spawn()
            for n in self.nodes:
                n.wait()
            if self.balancer:
                self.start_haproxy()
        except BaseException:
            self.stop()
            raise
        return self

    def start_haproxy(self) -> None:
        exe = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
        if exe is None:
            raise RuntimeError("haproxy is not installed (Debian: apt-get install haproxy)")
        assert self.balancer_port is not None
        cfg = Path(self.dir) / "haproxy.cfg"
        cfg.write_text(render_haproxy([(n.name, n.port) for n in self.nodes], self.balancer_port))
        check = subprocess.run([exe, "-c", "-q", "-f", str(cfg)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy rejects the rendered configuration:\n{check.stdout}{check.stderr}")
        self._hlog = open(Path(self.dir) / "haproxy.log", "wb")
        self.haproxy = subprocess.Popen([exe, "-db", "-f", str(cfg)], stdout=self._hlog, stderr=subprocess.STDOUT,
                                        preexec_fn=_die_with_parent)
        wait_port(self.balancer_port, 20, self.haproxy)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until HAProxy's checks see every node up (its /health through the balancer)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(n.health()[0] == 200 for n in self.nodes if n.proc and n.proc.poll() is None):
                return
            time.sleep(0.2)
        raise TimeoutError("nodes not healthy")

    def stop(self) -> None:
        _stop(self.haproxy)
        if getattr(self, "_hlog", None) is not None:
            self._hlog.close()
        for n in self.nodes:
            n.stop()

    def logs(self) -> str:
        """Every node's output (for a failing test's report)."""
        return "\n".join(f"--- {n.name} ---\n{n.log()[-4000:]}" for n in self.nodes)

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.local_cluster", description="run redis-server, N emostream nodes and HAProxy on loopback")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--redis", default=None, help="use this Redis instead of starting one")
    args = ap.parse_args(argv)
    redis = None if args.redis else RedisServer().start()
    url = args.redis or redis.url  # type: ignore[union-attr]
    try:
        with Cluster(url, args.nodes) as c:
            print(f"redis     {url}")
            for n in c.nodes:
                print(f"{n.name:9} http://127.0.0.1:{n.port}/")
            print(f"balancer  http://127.0.0.1:{c.balancer_port}/   (Ctrl-C stops everything)", flush=True)
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
    finally:
        if redis is not None:
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
