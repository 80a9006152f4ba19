"""The settings' sections: each key's type, default, bounds and meaning.

`runtime.settings.Settings` holds one of each (`server`, `exchange`, `redis`, ...) and is
what loads them from the YAML file and the environment. `runtime.settings` re-exports every
section, and the rest of the code imports them from there. A section refuses keys it does
not declare, so a mistyped key fails at start, named.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, model_validator

from runtime.addresses import is_loopback_host, nats_servers, redis_url


class _Section(BaseModel):
    model_config = {"extra": "forbid"}


class TlsSettings(_Section):
    """TLS on the gRPC port: on when `cert_file` and `key_file` are set (PEM files)."""

    cert_file: str = Field("", description="server certificate chain (PEM); empty = plaintext gRPC")
    key_file: str = Field("", description="the certificate's private key (PEM)")
    client_ca_file: str = Field(
        "",
        description="CA (PEM) of client certificates; set = mutual TLS, clients without one are refused",
    )

    @model_validator(mode="after")
    def _both_or_neither(self) -> TlsSettings:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file must be set together")
        if self.client_ca_file and not self.cert_file:
            raise ValueError("client_ca_file needs cert_file and key_file (mutual TLS is TLS first)")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


class ServerSettings(_Section):
    host: str = Field(
        "127.0.0.1",
        description="address the gateway's gRPC and HTTP ports and the worker and listener /metrics bind; "
        "loopback by default, 0.0.0.0 in containers (a non-loopback address needs auth.enabled)",
    )
    grpc_port: int = Field(50051, ge=0, le=65535)
    http_port: int = Field(9091, ge=0, le=65535)
    shutdown_grace_ms: int = Field(5000, ge=0)
    tls: TlsSettings = TlsSettings()
    max_streams: int = Field(
        500, gt=0, description="StreamOrderUpdates calls open at once on one gateway, every client"
    )
    max_streams_per_client: int = Field(
        20,
        gt=0,
        description="StreamOrderUpdates calls one client may hold open on one gateway (the API client "
        "with auth on, else the peer's address)",
    )
    keepalive_ms: int = Field(
        10_000,
        gt=0,
        description="the gateway pings each client connection this often; one that does not answer "
        "within keepalive_timeout_ms is closed, with its streams (a client host that vanished)",
    )
    keepalive_timeout_ms: int = Field(5_000, gt=0)
    client_ping_min_ms: int = Field(
        2_000,
        gt=0,
        description="clients may send keepalive pings this often (even with no call open), to notice a "
        "gateway host that vanished; more often and the gateway closes their connection",
    )
    list_scan_cap: int = Field(
        2000,
        ge=1,
        description="orders one ListOrders (and each CancelAllOrders batch) reads at most; a rare filter "
        "then answers a short page with a next_page_token",
    )


class ApiClientSettings(_Section):
    """One gRPC client: its name, the SHA-256 of its API key (never the key), what it may do."""

    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$", description="owner of the orders it places")
    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the API key")
    allowed_symbols: list[str] = Field(
        default_factory=list, description="symbols it may trade; empty = every symbol traded here"
    )
    requests_per_second: float | None = Field(
        None,
        gt=0,
        description="its CreateOrder/CancelOrder rate; default admission.client_requests_per_second",
    )
    burst: int | None = Field(None, gt=0, description="default admission.client_burst")
    admin: bool = Field(False, description="may call AdminService (risk limits, kill switch)")


class AuthSettings(_Section):
    """API keys on the gRPC port (metadata `x-api-key`); each client sees only its own orders."""

    enabled: bool = Field(
        True, description="false: no keys, every caller sees every order (local tests only)"
    )
    clients: list[ApiClientSettings] = Field(default_factory=list)
    failure_delay_ms: int = Field(
        200, ge=0, description="a call with a missing or wrong key waits this long for its UNAUTHENTICATED"
    )
    max_delayed_failures: int = Field(
        64,
        gt=0,
        description="failed calls waiting out failure_delay_ms at once; beyond it they are refused at once "
        "(a flood of bad keys cannot pile up waiting calls)",
    )

    @model_validator(mode="after")
    def _unique(self) -> AuthSettings:
        names = [c.name for c in self.clients]
        if len(set(names)) != len(names):
            raise ValueError("client names must be unique")
        if len({c.key_sha256 for c in self.clients}) != len(self.clients):
            raise ValueError("two clients have the same key_sha256")
        return self


class ClientSettings(_Section):
    """How `order-execution order` talks to the gateway."""

    api_key: SecretStr = Field(
        SecretStr(""),
        description="sent as x-api-key ($ORDER_EXECUTION_API_KEY); empty = .run/api-key if present",
    )
    tls_ca_file: str = Field("", description="CA (PEM) that signed the gateway's certificate; set = use TLS")
    tls_cert_file: str = Field("", description="client certificate (PEM) for mutual TLS")
    tls_key_file: str = Field("", description="its private key (PEM)")


class ExchangeSettings(_Section):
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


class RedisSettings(_Section):
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


class NatsSettings(_Section):
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


class RateLimitSettings(_Section):
    enabled: bool = Field(True, description="false: no budget of our own (load tests against a simulator)")
    requests_per_second: float = Field(10, gt=0, description="our token bucket, per account, every request")
    burst: int = Field(20, gt=0)
    safety_margin: float = Field(
        0.9, gt=0, le=1, description="share of the exchange's limits (exchangeInfo rateLimits) we use"
    )
    cancel_reserve: float = Field(
        0.2, ge=0, lt=1, description="share of the bucket and weight that creates leave for cancels"
    )


class AdmissionSettings(_Section):
    client_requests_per_second: float = Field(
        200, gt=0, description="requests per client (the API client; with auth off user_id, else peer)"
    )
    client_burst: int = Field(400, gt=0)
    read_cost: float = Field(
        0.25,
        gt=0,
        le=1,
        description="what GetOrder, ListOrders and a StreamOrderUpdates open cost, in requests (a write: 1)",
    )
    client_idle_s: float = Field(
        60, gt=0, description="a client's rate bucket unused this long (and full again) is forgotten"
    )
    max_queued_per_symbol: int = Field(1000, gt=0, description="orders accepted but not yet sent, per symbol")


class RiskSettings(_Section):
    """Pre-trade risk limits of the account: defaults that AdminService overrides at runtime (Redis)."""

    allowed_symbols: list[str] = Field(
        default_factory=list, description="symbols clients may trade; empty = every symbol in `symbols`"
    )
    max_order_notional: Decimal = Field(
        Decimal(1_000_000), gt=0, description="USDT per order; MARKET orders priced at the mark price"
    )
    max_order_quantity: Decimal = Field(Decimal(0), ge=0, description="0 = exchange's maxQty only")
    max_position_quantity: dict[str, Decimal] = Field(
        default_factory=dict,
        description="symbol -> largest |position + open orders on one side| (base asset); absent = none",
    )
    max_open_orders: int = Field(0, ge=0, description="orders not yet final, every symbol; 0 = no limit")
    max_orders_per_day: int = Field(0, ge=0, description="orders accepted per UTC day; 0 = no limit")
    price_band_percent: Decimal = Field(
        Decimal(0), ge=0, description="a LIMIT price must lie within this % of the mark price; 0 = off"
    )
    mark_price_max_age_ms: int = Field(
        60_000,
        gt=0,
        description="an older mark price cannot price a check (MARKET notional is refused); long enough "
        "to ride out a listener failover, short enough that the price is still near",
    )
    mark_price_poll_ms: int = Field(1000, gt=0, description="the listener polls premiumIndex this often")
    position_refresh_s: int = Field(
        60, gt=0, description="the listener re-reads positionRisk this often (ACCOUNT_UPDATE in between)"
    )
    cancel_open_grace_ms: int = Field(
        10_000,
        gt=0,
        description="a kill switch's cancel of every open order still pending this long after it was "
        "asked for (its gateway died midway) is completed by the leading listener",
    )


class CircuitBreakerSettings(_Section):
    failure_threshold: int = Field(5, gt=0)
    timeout: int = Field(30, gt=0, description="seconds the breaker stays open")
    max_requests: int = Field(3, gt=0)


class WorkerSettings(_Section):
    processes: int = Field(0, ge=0, description="worker processes `up` and `worker` start; 0 = one per core")
    max_in_flight: int = Field(64, gt=0, description="orders one worker process works on at once")
    max_order_age_ms: int = Field(5000, gt=0)


class ListenerSettings(_Section):
    lease_ttl_ms: int = Field(5000, gt=0, description="a standby takes over this long after the leader dies")
    keepalive_interval_s: int = Field(1800, gt=0, description="listenKey keepalive (PUT) period")
    reconnect_after_s: int = Field(
        23 * 3600 + 30 * 60, gt=0, description="reconnect the user stream before Binance's 24 h cap"
    )
    reconnect_backoff_max_s: float = Field(10.0, gt=0)
    stream_heartbeat_s: float = Field(
        30.0,
        gt=0,
        description="the user stream is pinged this often; no pong within half of it and it is "
        "reconnected (an exchange path that died silently is noticed in seconds, not minutes)",
    )
    max_events_in_flight: int = Field(
        256, gt=0, description="user-stream events applied at once (in order within one order)"
    )


class DeadManSettings(_Section):
    """The exchange's countdownCancelAll, kept armed by the leading listener for symbols with open orders."""

    enabled: bool = Field(True, description="false: no countdown; resting orders outlive a dead service")
    interval_s: float = Field(30.0, gt=0, description="seconds between heartbeats (re-arming each symbol)")
    countdown_ms: int = Field(
        120_000, gt=0, description="the exchange cancels a symbol's orders this long after the last heartbeat"
    )

    @model_validator(mode="after")
    def _countdown_outlasts_interval(self) -> DeadManSettings:
        if self.countdown_ms <= self.interval_s * 1000:
            raise ValueError("countdown_ms must be longer than interval_s, or a healthy service is canceled")
        return self


class ReconcileSettings(_Section):
    interval_s: float = Field(5.0, gt=0, description="seconds between sweeps of unsettled orders")
    max_queries_per_cycle: int = Field(50, gt=0, description="exchange queries one sweep may spend")
    grace_ms: int = Field(
        2000, ge=0, description="news younger than this is left to the workers and the user stream"
    )
    acceptance_margin_ms: int = Field(
        5000,
        ge=0,
        description="added to request timeout + recvWindow: after that an order not found was never placed",
    )
    unknown_not_found: Literal["reject", "resend"] = Field(
        "reject", description="what to do with an UNKNOWN order the exchange never got"
    )


class PerformanceSettings(_Section):
    order_cache_ttl: int = Field(
        86400 * 30, gt=0, description="seconds a final order is kept in Redis (open orders never expire)"
    )
    update_retention_s: int = Field(
        86400, gt=0, description="seconds StreamOrderUpdates can resume back (the Redis outbox)"
    )
    symbol_info_refresh: int = Field(300, gt=0, description="seconds between exchangeInfo refreshes")


class DashboardSettings(_Section):
    """The Dramatiq dashboard (`order-execution dashboard`, started by `up`)."""

    host: str = Field("127.0.0.1", description="loopback by default: the dashboard can delete messages")
    port: int = Field(9181, ge=0, le=65535)
    path: str = Field("/dashboard", pattern=r"^/[A-Za-z0-9._~/-]*[A-Za-z0-9._~-]$", description="URL prefix")


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "warn", "error"] = "info"
    format: Literal["json", "text", "console"] = "json"


class MonitoringSettings(_Section):
    """Worker and listener /metrics endpoints (the gateway's is server.http_port) and health probes."""

    worker_metrics_port: int = Field(9095, ge=0, le=65535, description="first worker process's; 0 = none")
    listener_metrics_port: int = Field(9094, ge=0, le=65535, description="0 = none")
    port_search: int = Field(32, gt=0, description="a process whose port is taken tries the next ones")
    probe_timeout_ms: int = Field(1000, gt=0, description="/health's exchange ping and NATS probe give up")
    probe_cache_ms: int = Field(5000, ge=0, description="/health reuses a probe's answer this long")
    cluster_gauges_refresh_ms: int = Field(
        5000,
        gt=0,
        description="the gateway reads the cluster gauges from Redis this often (never per scrape)",
    )
    metrics_render_ms: int = Field(
        250,
        ge=0,
        description="a gateway /metrics scrape reuses the page rendered less than this long ago; "
        "0 = render each",
    )
