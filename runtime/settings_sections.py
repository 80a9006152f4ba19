"""The settings' sections: each key's type, default, bounds and meaning.

`runtime.settings.Settings` holds one of each (`server`, `exchange`, `redis`, ...) and is
what loads them from the YAML file and the environment. `runtime.settings` re-exports every
section, and the rest of the code imports them from there.

Here: the base of every section, and the sections that tune how the service runs (rate
limits, admission, risk, breakers, workers, listener, dead man's switch, reconciler,
performance, dashboard, logging, monitoring). Who reaches the service (server, TLS, auth,
the CLI client) is in runtime/settings_access.py; what it connects to (exchange, Redis,
NATS) in runtime/settings_connections.py.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field, model_validator


class Section(BaseModel):
    """A settings section: it refuses keys it does not declare, so a mistyped key fails at start, named."""

    model_config = {"extra": "forbid"}


class RateLimitSettings(Section):
    enabled: bool = Field(True, description="false: no budget of our own (load tests against a simulator)")
    requests_per_second: float = Field(10, gt=0, description="our token bucket, per account, every request")
    burst: int = Field(20, gt=0)
    safety_margin: float = Field(
        0.9, gt=0, le=1, description="share of the exchange's limits (exchangeInfo rateLimits) we use"
    )
    cancel_reserve: float = Field(
        0.2, ge=0, lt=1, description="share of the bucket and weight that creates leave for cancels"
    )


class AdmissionSettings(Section):
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
    snapshot_refresh_ms: int = Field(
        50,
        ge=0,
        description="a CreateOrder check finding its account's admission snapshot older than this answers "
        "from it and re-reads it in the background",
    )
    snapshot_max_age_ms: int = Field(
        1000,
        ge=0,
        description="an admission snapshot older than this is not used: the check reads Redis inline "
        "(so after a second without orders); 0 = every check reads inline, and another process's write "
        "is seen by the very next check",
    )


class RiskSettings(Section):
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


class CircuitBreakerSettings(Section):
    failure_threshold: int = Field(5, gt=0)
    timeout: int = Field(30, gt=0, description="seconds the breaker stays open")
    max_requests: int = Field(3, gt=0)


class WorkerSettings(Section):
    processes: int = Field(0, ge=0, description="worker processes `up` and `worker` start; 0 = one per core")
    max_in_flight: int = Field(64, gt=0, description="orders one worker process works on at once")
    max_order_age_ms: int = Field(5000, gt=0)


class ListenerSettings(Section):
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


class DeadManSettings(Section):
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


class ReconcileSettings(Section):
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


class PerformanceSettings(Section):
    order_cache_ttl: int = Field(
        86400 * 30, gt=0, description="seconds a final order is kept in Redis (open orders never expire)"
    )
    update_retention_s: int = Field(
        86400, gt=0, description="seconds StreamOrderUpdates can resume back (the Redis outbox)"
    )
    symbol_info_refresh: int = Field(300, gt=0, description="seconds between exchangeInfo refreshes")


class DashboardSettings(Section):
    """The Dramatiq dashboard (`order-execution dashboard`, started by `up`)."""

    host: str = Field("127.0.0.1", description="loopback by default: the dashboard can delete messages")
    port: int = Field(9181, ge=0, le=65535)
    path: str = Field("/dashboard", pattern=r"^/[A-Za-z0-9._~/-]*[A-Za-z0-9._~-]$", description="URL prefix")


class LoggingSettings(Section):
    level: Literal["debug", "info", "warning", "warn", "error"] = "info"
    format: Literal["json", "text", "console"] = "json"


class MonitoringSettings(Section):
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
