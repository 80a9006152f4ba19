"""The config files of `up --ha`'s servers (launcher/ha_servers.py), as text; and which Redis node an
earlier run left as primary.

Every value a config carries is ours (ports, paths, random URL-safe passwords), written in
double quotes; the files are written 0600 by the caller.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from order_execution.launcher.embedded_servers import nats_authorization

MASTER_NAME = "order-execution"  # the name the sentinels monitor the primary under
NATS_CLUSTER_NAME = "order-execution"
NATS_ROUTE_USER = "route"  # the login cluster routes use between NATS nodes (not the clients')
SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")
SENTINEL_QUORUM = 2  # sentinels that must agree the primary is down
# A primary silent this long is down. 1 s gave false failovers on a loaded 2-core machine (a
# sentinel marked the just-promoted primary down and promoted the other replica too: both then
# refused writes for ~11 s), as redis/redis#8607 reports at 500 ms; 2 s costs a second per failover.
DOWN_AFTER_MS = 2000
FAILOVER_TIMEOUT_MS = 5000


def redis_node_config(password: str, primary_port: int | None, *, primary_host: str = "127.0.0.1") -> str:
    """A Redis data node's config file: its password, what it uses to reach a primary, the
    write guard, and `replicaof primary_host primary_port` unless `primary_port` is None (the
    primary itself)."""
    lines = [
        "# written by `order-execution up --ha`",
        f'requirepass "{password}"',
        f'masterauth "{password}"',  # every node: any of them may become a replica of another
        "min-replicas-to-write 1",
        "min-replicas-max-lag 10",
        "repl-diskless-sync-delay 0",  # sync a replica at once (the default waits 5 s for others)
    ]
    if primary_port is not None:
        lines.append(f"replicaof {primary_host} {primary_port}")
    return "\n".join(lines) + "\n"


def sentinel_config(
    port: int,
    data_dir: Path,
    *,
    master_name: str,
    primary_port: int,
    redis_password: str,
    sentinel_password: str,
    host: str = "127.0.0.1",
    primary_host: str = "127.0.0.1",
) -> str:
    """A sentinel's config file, listening on `host` (it rewrites the file as it learns; the
    directory must be writable)."""
    return (
        "\n".join(
            [
                "# written by `order-execution up --ha`",
                f"bind {host}",
                f"port {port}",
                f'dir "{data_dir}"',
                f'pidfile "{data_dir / "redis-sentinel.pid"}"',
                f'requirepass "{sentinel_password}"',
                f'sentinel sentinel-pass "{sentinel_password}"',
                f"sentinel monitor {master_name} {primary_host} {primary_port} {SENTINEL_QUORUM}",
                f'sentinel auth-pass {master_name} "{redis_password}"',
                f"sentinel down-after-milliseconds {master_name} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {master_name} {FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {master_name} 1",
            ]
        )
        + "\n"
    )


def nats_node_config(
    name: str,
    port: int,
    cluster_port: int,
    routes: Sequence[str],
    *,
    password: str,
    route_password: str,
    host: str = "127.0.0.1",
) -> str:
    """A NATS node's config file: its name, client and cluster ports on `host`, the client login,
    and its cluster routes to `routes` (the other nodes' "host:cluster_port"), which log in as
    `NATS_ROUTE_USER` with `route_password`."""
    login = f"{NATS_ROUTE_USER}:{quote(route_password, safe='')}"
    route_urls = ", ".join(f'"nats-route://{login}@{other}"' for other in routes)
    header = f'# written by `order-execution up --ha`\nserver_name: "{name}"\nlisten: "{host}:{port}"\n'
    cluster = (
        f'cluster {{\n  name: "{NATS_CLUSTER_NAME}"\n  listen: "{host}:{cluster_port}"\n'
        + nats_authorization(route_password, user=NATS_ROUTE_USER, indent="  ")
        + f"  routes: [{route_urls}]\n}}\n"
    )
    return header + nats_authorization(password) + cluster


def last_primary(ha_dir: Path) -> str | None:
    """The Redis node an earlier run's sentinels last named primary, or None (first run, or unknown)."""
    try:
        ports = json.loads((ha_dir / "nodes.json").read_text())
        config = (ha_dir / f"{SENTINELS[0]}.conf").read_text()
    except (OSError, ValueError):
        return None
    for line in config.splitlines():
        words = line.split()
        if words[:2] == ["sentinel", "monitor"] and len(words) >= 5:
            return next((name for name, port in ports.items() if str(port) == words[4]), None)
    return None
