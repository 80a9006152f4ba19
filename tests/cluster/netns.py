"""Hosts of the multi-host test: network namespaces joined by a bridge that lives in one more.

`TestNetwork.create` makes, for each host name, a namespace with loopback and one interface
`eth0` holding an address of a private /24, the other end of its veth pair plugged into a
bridge inside a namespace of the network's own. Every name carries the test's pid and a random
tag, so two runs never share a namespace, and a run that was killed before it could clean up
has its namespaces removed by the next one. No namespace gets a default route, and nothing is ever created in
the root namespace (the veth pairs are made inside the bridge's namespace), so no packet can
leave the test's hosts; the /24 is one no interface of the root namespace has an address in.

Faults: `cut(host)` takes a host's bridge port down (its cable pulled), `mend(host)` puts it
back; `partition(a, b)` adds a blackhole route to the other in each of the two, `heal(a, b)`
removes them. `remove()` deletes every namespace (and with them every veth and the bridge);
the processes in them must be stopped first, by pid.

`HostThreads` runs a function on a thread that has joined a host's network namespace (setns
is per thread): the test's own probes (a Redis PING, an HTTP GET) reach the hosts that way,
while its other threads stay in the root namespace.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import random
import re
import secrets
import shutil
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
BRIDGE = "br0"
NETNS_DIR = "/var/run/netns"
_NAME = re.compile(r"^oe-(\d+)-[0-9a-f]{4}-")  # oe-<pid of the test>-<random>-<host>


class NetworkUnavailable(RuntimeError):
    """This machine cannot make the test's network (not root, or no `ip`)."""


def can_make_networks() -> str | None:
    """None if namespaces can be made here, else why not (for a skip, or a failure in CI)."""
    if os.geteuid() != 0:
        return "the multi-host test makes network namespaces: it needs root"
    if shutil.which("ip") is None:
        return "the multi-host test needs the `ip` command (iproute2)"
    return None


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        raise NetworkUnavailable(f"ip {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def root_networks() -> list[ipaddress.IPv4Network]:
    """The IPv4 networks of every address the root namespace has."""
    networks: list[ipaddress.IPv4Network] = []
    for line in _ip("-o", "-4", "addr", "show").splitlines():
        words = line.split()
        if "inet" in words:
            networks.append(ipaddress.IPv4Interface(words[words.index("inet") + 1]).network)
    return networks


def free_subnet(rng: random.Random) -> ipaddress.IPv4Network:
    """A private /24 (in 10.0.0.0/8) that overlaps no network of the root namespace."""
    taken = root_networks()
    for _ in range(200):
        candidate = ipaddress.IPv4Network(f"10.{rng.randrange(100, 250)}.{rng.randrange(1, 255)}.0/24")
        if not any(candidate.overlaps(network) for network in taken):
            return candidate
    raise NetworkUnavailable("no free private /24 in 10.100-249.x.0 (every one overlaps the root's)")


@dataclass
class TestNetwork:
    """Namespaces `hosts` (name -> address) on one bridge; see the module docstring."""

    __test__ = False  # not a pytest class

    tag: str
    subnet: ipaddress.IPv4Network
    addresses: dict[str, str] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)  # every one made, the bridge's first
    _blackholes: set[tuple[str, str]] = field(default_factory=set)

    @classmethod
    def create(cls, hosts: Sequence[str], rng: random.Random) -> TestNetwork:
        """Make the bridge's namespace and one namespace per host. On any failure whatever was made
        is removed before the error is raised."""
        remove_orphans()
        network = cls(tag=f"{os.getpid()}-{secrets.token_hex(2)}", subnet=free_subnet(rng))
        try:
            bridge = network._add_namespace("bridge")
            _ip("-n", bridge, "link", "add", BRIDGE, "type", "bridge")
            _ip("-n", bridge, "link", "set", BRIDGE, "up")
            for index, host in enumerate(hosts, start=1):
                namespace = network._add_namespace(host)
                address = str(network.subnet.network_address + index)
                port = network._port(host)
                _ip(
                    "-n",
                    bridge,
                    "link",
                    "add",
                    port,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    namespace,
                )
                _ip("-n", bridge, "link", "set", port, "master", BRIDGE, "up")
                _ip("-n", namespace, "addr", "add", f"{address}/{network.subnet.prefixlen}", "dev", "eth0")
                _ip("-n", namespace, "link", "set", "eth0", "up")
                _ip("-n", namespace, "link", "set", "lo", "up")
                network.addresses[host] = address
        except BaseException:
            network.remove()
            raise
        return network

    def _add_namespace(self, host: str) -> str:
        name = self.namespace(host)
        _ip("netns", "add", name)
        self.namespaces.append(name)
        return name

    def namespace(self, host: str) -> str:
        return f"oe-{self.tag}-{host}"

    def _port(self, host: str) -> str:
        return f"p-{host}"[:15]  # the host's end on the bridge (interface names: 15 characters at most)

    def command(self, host: str, command: Sequence[str]) -> list[str]:
        """`command` run inside `host` (`ip netns exec` execs it: the pid is the command's own)."""
        return ["ip", "netns", "exec", self.namespace(host), *command]

    # ------------------------------------------------------------------ faults
    def cut(self, host: str) -> None:
        """Pull `host`'s cable: its bridge port goes down, nothing reaches it or leaves it."""
        _ip("-n", self.namespace("bridge"), "link", "set", self._port(host), "down")

    def mend(self, host: str) -> None:
        _ip("-n", self.namespace("bridge"), "link", "set", self._port(host), "up")

    def partition(self, a: str, b: str) -> None:
        """`a` and `b` stop reaching each other (a blackhole route to the other in each); both
        still reach every other host."""
        for here, there in ((a, b), (b, a)):
            _ip("-n", self.namespace(here), "route", "add", "blackhole", f"{self.addresses[there]}/32")
            self._blackholes.add((here, there))

    def heal(self, a: str, b: str) -> None:
        for here, there in ((a, b), (b, a)):
            if (here, there) in self._blackholes:
                _ip("-n", self.namespace(here), "route", "del", "blackhole", f"{self.addresses[there]}/32")
                self._blackholes.discard((here, there))

    def routes(self, host: str) -> str:
        return _ip("-n", self.namespace(host), "route", "show")

    # ------------------------------------------------------------------ cleanup
    def remove(self) -> list[str]:
        """Delete every namespace this network made; return the ones that could not be deleted."""
        failed = []
        for name in reversed(self.namespaces):
            done = subprocess.run(["ip", "netns", "del", name], capture_output=True, text=True, timeout=20)
            if done.returncode != 0 and os.path.exists(os.path.join(NETNS_DIR, name)):
                failed.append(f"{name}: {done.stderr.strip()}")
        self.namespaces = [n for n in self.namespaces if os.path.exists(os.path.join(NETNS_DIR, n))]
        return failed


def remove_orphans() -> list[str]:
    """Delete the namespaces an earlier run left behind because it was killed (SIGKILL leaves no
    time to clean up): those named `oe-<pid>-…` whose pid is no longer alive. Returns their names."""
    removed = []
    names = os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR) else []
    for name in names:
        match = _NAME.match(name)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)
            removed.append(name)
    return removed


def _join(namespace: str) -> None:
    """Move the calling thread into `namespace`'s network namespace (thread initializer)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(os.path.join(NETNS_DIR, namespace), os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns into {namespace}: {os.strerror(error)}")
    finally:
        os.close(fd)


class HostThreads:
    """One thread per host, each inside that host's network namespace, for the test's probes."""

    def __init__(self, network: TestNetwork) -> None:
        self._pools = {
            host: ThreadPoolExecutor(1, f"in-{host}", initializer=_join, initargs=(network.namespace(host),))
            for host in network.addresses
        }

    def run(self, host: str, probe: Callable[[], T], timeout_s: float = 30.0) -> T:
        """`probe()` on `host`'s thread (its sockets are that host's); its result or its exception."""
        return self._pools[host].submit(probe).result(timeout=timeout_s)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
