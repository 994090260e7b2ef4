"""A real 3-master Redis Cluster on loopback from the installed redis-server and redis-cli."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.support.servers import free_port, redis_binary, wait_port


def _cluster_port() -> int:
    """A free port whose cluster-bus twin (port + 10000) is free and valid too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            port = random.randint(20000, 40000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def cluster_tools_available() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


@dataclass
class RedisClusterProc:
    """Three cluster-enabled masters joined with `redis-cli --cluster create` (no replicas)."""

    masters: int = 3
    ports: list[int] = field(default_factory=list)
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="opd-cluster-")))
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """What `OPD_REDIS_URL` takes for a cluster: any one node, the client discovers the rest."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}/0"

    @property
    def node_urls(self) -> list[str]:
        return [f"redis://127.0.0.1:{p}/0" for p in self.ports]

    def start(self, timeout: float = 20.0) -> RedisClusterProc:
        self.ports = [_cluster_port() for _ in range(self.masters)]
        for port in self.ports:
            node_dir = self.dir / str(port)
            node_dir.mkdir(parents=True)
            args = [
                redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir),
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--loglevel", "notice", "--logfile", str(node_dir / "redis.log"),
            ]  # fmt: skip
            self.procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in self.ports:
            wait_port(port)
        created = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if created.returncode != 0:
            raise RuntimeError(f"cluster create failed: {created.stdout[-800:]} {created.stderr[-800:]}")
        self._wait_ok(timeout)
        return self

    def _wait_ok(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = []
            for url in self.node_urls:
                with redis.Redis.from_url(url, decode_responses=True) as node:
                    info = node.execute_command("CLUSTER", "INFO")
                    text = info if isinstance(info, str) else str(info)
                    states.append("cluster_state:ok" in text)
            if all(states):
                return
            time.sleep(0.1)
        raise TimeoutError("the cluster did not reach cluster_state:ok")

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.ports[0], decode_responses=True)

    def master_of(self, key: str) -> int:
        """The port of the master that owns `key`'s slot."""
        with self.client() as rc:
            node = rc.get_node_from_key(key)
            return int(node.port)

    def flushall(self) -> None:
        for url in self.node_urls:
            with redis.Redis.from_url(url) as node:
                node.flushall()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def running_cluster() -> Iterator[RedisClusterProc]:
    """A local Redis Cluster for a module's tests (`yield from` it in a fixture); skips without the tools."""
    if not cluster_tools_available():
        pytest.skip("redis-server and redis-cli are needed for a local cluster")
    proc = RedisClusterProc().start()
    yield proc
    proc.cleanup()
