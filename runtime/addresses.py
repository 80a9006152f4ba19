"""Service addresses: URLs that carry credentials, built and read with the standard library.

A password is percent-encoded into a URL (`urllib.parse.quote`, nothing left safe) and
decoded out of one (`urlsplit`, `unquote`), so any character works, `@`, `:`, `/` and
`%` included; nothing here splits a URL by hand. NATS clients are given their
credentials apart from the URL (nats-py does not decode them). `is_loopback_host`
decides what counts as this machine only: 127.0.0.0/8, ::1 and `localhost`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit, urlunsplit

DEFAULT_NATS_PORT = 4222


def is_loopback_host(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 with or without brackets) is this machine only."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _netloc(host: str, port: int | None, user: str = "", password: str = "") -> str:
    shown_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    where = shown_host if port is None else f"{shown_host}:{port}"
    if not user and not password:
        return where
    credentials = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    return f"{credentials}@{where}"


def redis_url(address: str, *, password: str = "", db: int = 0, username: str = "") -> str:
    """`redis://[user:password@]host:port/db` for `address` (`host:port`), credentials percent-encoded.

    An `address` that is already a URL (`redis://`, `rediss://`, `unix://`) is returned as given.
    """
    if "://" in address:
        return address
    host, _, port = address.rpartition(":") if ":" in address else (address, "", "")
    netloc = _netloc(host or "localhost", int(port) if port else None, username, password)
    return urlunsplit(("redis", netloc, f"/{db}", "", ""))


@dataclass(frozen=True)
class NatsServers:
    """NATS server URLs without credentials, and the credentials found in them (decoded)."""

    urls: list[str]
    user: str = ""
    password: str = field(default="", repr=False)


def nats_servers(address: str) -> NatsServers:
    """Split `address` (one URL or a comma-separated list, `nats://[user:pass@]host[:port]`).

    The URLs come back without credentials; the first server's user and password (decoded)
    are returned beside them. Raises ValueError, naming no secret, for a URL that has no host
    or whose port is not a number.
    """
    urls: list[str] = []
    user = password = ""
    for index, raw in enumerate(part.strip() for part in address.split(",")):
        parts = urlsplit(raw if "://" in raw else f"nats://{raw}")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"NATS server #{index + 1}: the port is not a number") from None
        if not parts.hostname:
            raise ValueError(f"NATS server #{index + 1}: no host")
        if not urls and (parts.username or parts.password):
            user, password = unquote(parts.username or ""), unquote(parts.password or "")
        urls.append(urlunsplit((parts.scheme, _netloc(parts.hostname, port), "", "", "")))
    return NatsServers(urls, user, password)


def nats_host_port(url: str) -> tuple[str, int]:
    """(host, port) of one NATS server URL (port 4222 when it has none)."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    return parts.hostname or "127.0.0.1", parts.port or DEFAULT_NATS_PORT


def without_password(url: str) -> str:
    """`url` with the password in its user part replaced by `***` (for messages and logs).

    A URL too malformed to parse comes back as `<unparsable URL>`: it may hold a password.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    where = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{where}"))
