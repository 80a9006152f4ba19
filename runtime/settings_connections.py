"""The settings sections of what the service connects to: the exchange, Redis (or its
sentinels) and NATS.

Each key's type, default, bounds and meaning; `runtime.settings` holds and loads them.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator

from order_execution.runtime.addresses import is_loopback_host, nats_servers, redis_url
from order_execution.runtime.settings_sections import Section


class ExchangeSettings(Section):
    api_key: SecretStr = SecretStr("")
    secret_key: SecretStr = SecretStr("")
    testnet: bool = True
    base_url: str = Field("", description="Overrides the production/testnet URL, e.g. the simulator's.")
    recv_window_ms: int = Field(5000, gt=0, le=60000)
    request_timeout_ms: int = Field(5000, gt=0)

    stream_url: str = Field(
        "", description="Overrides the user-data websocket base; default follows base_url"
    )

    plain_http_hosts: list[str] = Field(
        default_factory=list,
        description="hosts besides loopback that base_url/stream_url may reach without TLS (a "
        "simulator on a private network, e.g. docker-compose's 'simulator'); the API key travels in clear",
    )

    @model_validator(mode="after")
    def _tls_off_loopback(self) -> ExchangeSettings:
        for key, url, secure in (
            ("base_url", self.base_url, "https"),
            ("stream_url", self.stream_url, "wss"),
        ):
            if url:
                _require_tls(key, url, secure, self.plain_http_hosts)
        return self

    @property
    def rest_url(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        return "https://demo-fapi.binance.com" if self.testnet else "https://fapi.binance.com"

    @property
    def user_stream_url(self) -> str:
        """Base of the user-data websocket (`<base>/private/ws?listenKey=...`)."""
        if self.stream_url:
            return self.stream_url.rstrip("/")
        if self.base_url:
            return "ws" + self.rest_url.removeprefix("http")
        return "wss://fstream.binancefuture.com" if self.testnet else "wss://fstream.binance.com"


class RedisSettings(Section):
    address: str = "localhost:6379"
    password: SecretStr = SecretStr("")
    db: int = Field(0, ge=0)
    namespace: str = "oe"
    socket_timeout_ms: int = Field(
        1000, gt=0, description="a command that takes longer fails (UNAVAILABLE), never hangs"
    )
    connect_timeout_ms: int = Field(1000, gt=0)
    max_connections: int = Field(
        1024,
        gt=0,
        description="per process; redis-py's default of 100 refused commands once an overloaded "
        "gateway had 100 in flight",
    )

    sentinels: list[str] = Field(
        default_factory=list,
        description="Sentinel addresses, 'host:port' each; set = the primary is found through them and a "
        "failover is followed without a restart (`address` is then unused); empty = connect to `address`",
    )
    master_name: str = Field(
        "order-execution", min_length=1, description="the name the sentinels monitor the primary under"
    )
    sentinel_password: SecretStr = Field(
        SecretStr(""),
        description="AUTH for the sentinels themselves; empty = none (the data nodes use `password`)",
    )
    min_replica_acks: int = Field(
        0,
        ge=0,
        description="replicas a write must reach (WAIT) before it is acknowledged; 0 = the primary alone",
    )
    replica_ack_timeout_ms: int = Field(
        500, gt=0, description="how long a write waits for min_replica_acks before it is refused"
    )

    @model_validator(mode="after")
    def _sentinel_addresses(self) -> RedisSettings:
        for index, address in enumerate(self.sentinels):
            sentinel_host_port(address, index)
        if not self.master_name.strip():
            raise ValueError("redis.master_name must not be blank")
        if self.min_replica_acks and self.replica_ack_timeout_ms >= self.socket_timeout_ms:
            # The client would give up before WAIT answers: a generic timeout instead of the
            # answer that names the client id to retry with.
            raise ValueError(
                f"redis.replica_ack_timeout_ms ({self.replica_ack_timeout_ms}) must be below "
                f"redis.socket_timeout_ms ({self.socket_timeout_ms}) when redis.min_replica_acks is set"
            )
        return self

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """`sentinels` as (host, port) pairs, in the order given."""
        return [sentinel_host_port(address, index) for index, address in enumerate(self.sentinels)]

    @property
    def url(self) -> str:
        """The redis-py URL: `address` itself if it is a URL, else built with the password encoded."""
        return redis_url(self.address, password=self.password.get_secret_value(), db=self.db)


def sentinel_host_port(address: str, index: int = 0) -> tuple[str, int]:
    """("host", port) of a sentinel's "host:port" ("[::1]:26379" for IPv6); ValueError, naming which
    entry of redis.sentinels, if there is no host or the port is not a number in 1-65535."""
    host, _, port = address.strip().rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(
            f"redis.sentinels #{index + 1} ({address!r}) must be 'host:port' with a port in 1-65535"
        )
    return host, int(port)


class NatsSettings(Section):
    """Where NATS is (`servers`, else `address`) and how the JetStream stream is kept."""

    address: str = Field(
        "nats://localhost:4222", description="one URL or several, comma-separated; may carry user:password"
    )
    servers: list[str] = Field(
        default_factory=list,
        description="the cluster's URLs (the first may carry user:password); empty = address",
    )
    user: str = Field("", description="with password: overrides credentials in the address")
    password: SecretStr = SecretStr("")
    stream: str = "ORDERS"
    replicas: int = Field(
        1, ge=1, le=5, description="the JetStream stream's replica count (3 on a 3-node cluster)"
    )
    ping_interval_s: int = Field(10, gt=0)

    @model_validator(mode="after")
    def _servers_parse(self) -> NatsSettings:
        if self.servers:
            nats_servers(",".join(self.servers))  # ValueError naming the server, not its password
        return self

    @property
    def server_list(self) -> str:
        """`servers` joined by commas when set, else `address`: what the NATS clients are given."""
        return ",".join(self.servers) if self.servers else self.address


def _require_tls(key: str, url: str, secure: str, plain_hosts: list[str]) -> None:
    """Refuse a URL to the exchange that is neither `secure` (https/wss) nor on loopback (or allowed)."""
    parts = urlsplit(url)
    plain = {"https": "http", "wss": "ws"}[secure]
    if parts.scheme not in (secure, plain) or not parts.hostname:
        raise ValueError(f"exchange.{key} must be a {secure}:// URL with a host")
    host = parts.hostname
    if parts.scheme == plain and not is_loopback_host(host) and host not in plain_hosts:
        raise ValueError(
            f"exchange.{key} must use {secure}:// to reach {host}: {plain}:// would send the API key "
            f"in clear; {plain}:// is only for loopback (127.0.0.1, ::1, localhost) or a host "
            "listed in exchange.plain_http_hosts"
        )
