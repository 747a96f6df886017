"""A Redis Sentinel set on free loopback ports for tests and benches: a primary, a replica
and three sentinels (`redis-server … --sentinel`), each a real process, torn down after.

Both the data servers and the sentinels require a password (so the tests also carry
secrets). `down-after-milliseconds` is short (1000) so a SIGKILL is noticed quickly.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from linewatch.pipeline.streams.embedded_redis import find_redis_server, free_port

SERVICE = "linewatch"
PASSWORD = "data-pw-5e1c"
SENTINEL_PASSWORD = "sentinel-pw-77ab"
DOWN_AFTER_MS = 1000
# Under load a sentinel may not reach a just-promoted primary within DOWN_AFTER_MS and
# starts a failover of it that aborts (no good replica yet); every sentinel that voted
# then refuses to fail over that primary for 2 x FAILOVER_TIMEOUT_MS (measured: a second
# kill 10 s after the first resumed after 15.7 s, with the default-like 10 s timeout).
FAILOVER_TIMEOUT_MS = 4000


@dataclass
class Node:
    port: int
    process: subprocess.Popen[bytes] | None = None


@dataclass
class SentinelSet:
    root: Path
    servers: list[Node] = field(default_factory=list)
    sentinels: list[Node] = field(default_factory=list)
    killed_at: float = 0.0  # monotonic time of the last kill

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{node.port}" for node in self.sentinels]

    def settings(self, **extra: object) -> dict[str, object]:
        """The `redis:` section of a linewatch configuration for this set."""
        return {
            "sentinels": self.addresses,
            "service": SERVICE,
            "password": PASSWORD,
            "sentinel_password": SENTINEL_PASSWORD,
            **extra,
        }

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=PASSWORD, socket_timeout=2)

    def primary_port(self) -> int | None:
        """The primary's port as the first answering sentinel says."""
        for node in self.sentinels:
            try:
                reply = _sentinel(node.port).sentinel_get_master_addr_by_name(SERVICE)
            except redis.RedisError:
                continue
            if reply:
                return int(reply[1])
        return None

    def node(self, port: int) -> Node:
        return next(node for node in self.servers if node.port == port)

    def kill_primary(self) -> int:
        """SIGKILL the current primary; its port."""
        port = self.primary_port()
        assert port is not None, "no primary known"
        self.kill(port)
        return port

    def kill(self, port: int) -> None:
        """SIGKILL the data server on `port` (its data is gone: no persistence)."""
        process = self.node(port).process
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        self.killed_at = time.monotonic()

    def restart(self, port: int) -> None:
        """Start the killed server on `port` again, empty, in the role it had."""
        self.node(port).process = _server(self.root, port)

    def wait_promotion(self, old: int, timeout_s: float = 30) -> float:
        """Seconds until the sentinels name a primary other than `old` that answers."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            port = self.primary_port()
            if port not in (None, old) and _role(self.client(port)) == "master":
                return time.monotonic() - start
            time.sleep(0.05)
        raise AssertionError(f"no replica promoted within {timeout_s} s")

    def restart_as_replica(self, port: int, timeout_s: float = 30) -> None:
        """Start the killed server again as a replica of the current primary, synced, and
        wait until every sentinel counts it as a healthy replica. Until they do, a sentinel
        still holds it `s_down` and would find no replica to promote if the primary died:
        the failover aborts and is retried only after 2 × failover-timeout (measured: 31 s
        instead of 3 s when the primary was killed the moment the replica had synced).
        Also waits out the failover delay a spurious vote after the last kill may have
        started (see FAILOVER_TIMEOUT_MS): a plant's second failure is not that close."""
        primary = self.primary_port()
        assert primary is not None and primary != port
        self.node(port).process = _server(self.root, port, replica_of=primary)
        quiet_after = self.killed_at + (2 * FAILOVER_TIMEOUT_MS + DOWN_AFTER_MS) / 1000 + 1
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.synced(port) and all(self._healthy_replica(n, port) for n in self.sentinels):
                time.sleep(max(0.0, quiet_after - time.monotonic()))
                return
            time.sleep(0.1)
        raise AssertionError(f"the restarted server on {port} was not a healthy replica in time")

    def synced(self, port: int) -> bool:
        """The server on `port` is a replica whose link to its primary is up."""
        try:
            return self.client(port).info("replication").get("master_link_status") == "up"
        except redis.RedisError:
            return False

    @staticmethod
    def _healthy_replica(sentinel: Node, port: int) -> bool:
        try:
            replicas = _sentinel(sentinel.port).sentinel_slaves(SERVICE)
        except redis.RedisError:
            return False
        return any(
            int(r["port"]) == port
            and r["is_slave"]
            and not (r["is_sdown"] or r["is_disconnected"])
            and r.get("master-link-status") == "ok"
            for r in replicas
        )

    def stop(self) -> None:
        for node in [*self.sentinels, *self.servers]:
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
                try:
                    node.process.wait(5)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait()


def _sentinel(port: int) -> redis.Redis:
    return redis.Redis(port=port, password=SENTINEL_PASSWORD, socket_timeout=1)


def _role(client: redis.Redis) -> str | None:
    try:
        return str(client.info("replication").get("role"))
    except redis.RedisError:
        return None


def _server(root: Path, port: int, replica_of: int | None = None) -> subprocess.Popen[bytes]:
    folder = root / f"redis-{port}"
    folder.mkdir(parents=True, exist_ok=True)
    command = [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--dir", str(folder), "--save", "", "--appendonly", "no"]
    command += ["--requirepass", PASSWORD, "--masterauth", PASSWORD]
    if replica_of is not None:
        command += ["--replicaof", "127.0.0.1", str(replica_of)]
    log = (folder / "server.log").open("ab")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def _sentinel_process(root: Path, port: int, primary: int) -> subprocess.Popen[bytes]:
    folder = root / f"sentinel-{port}"
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {folder}\nrequirepass {SENTINEL_PASSWORD}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n"
        f"sentinel auth-pass {SERVICE} {PASSWORD}\n"
        f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
        f"sentinel parallel-syncs {SERVICE} 1\n"
    )
    log = (folder / "sentinel.log").open("ab")
    return subprocess.Popen(
        [find_redis_server(), str(conf), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
    )


def _wait_ready(cluster: SentinelSet, timeout_s: float = 30) -> None:
    """Until the replica is synced and every sentinel knows the replica and the others."""
    deadline = time.monotonic() + timeout_s
    primary, replica = cluster.servers
    while time.monotonic() < deadline:
        try:
            synced = cluster.synced(replica.port)
            seen = [_sentinel(n.port).sentinel_master(SERVICE) for n in cluster.sentinels]
            if synced and all(
                int(s["num-slaves"]) >= 1 and int(s["num-other-sentinels"]) >= 2 for s in seen
            ):
                return
        except (redis.RedisError, KeyError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"the sentinel set in {cluster.root} was not ready in {timeout_s} s")


@contextmanager
def sentinel_set(root: Path) -> Iterator[SentinelSet]:
    """Start a primary, a replica and three sentinels; stop them all on exit."""
    if shutil.which(find_redis_server()) is None and not Path(find_redis_server()).exists():
        raise RuntimeError("redis-server is needed for a Sentinel set")
    cluster = SentinelSet(root)
    try:
        primary = Node(free_port())
        primary.process = _server(root, primary.port)
        replica = Node(free_port())
        replica.process = _server(root, replica.port, replica_of=primary.port)
        cluster.servers = [primary, replica]
        for _ in range(3):
            node = Node(free_port())
            node.process = _sentinel_process(root, node.port, primary.port)
            cluster.sentinels.append(node)
        _wait_ready(cluster)
        yield cluster
    finally:
        cluster.stop()
