"""Typed settings of the simulator, built once at start from defaults, a YAML file, env and CLI flags.

Environment variables use the prefix ``SIM_`` (for example ``SIM_PORT=9000``); nested values use ``__``
(``SIM_RATE_LIMITS__WEIGHT_PER_MINUTE=10``). Unknown keys are rejected so a typo fails at start-up.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from usdm_simulator.replay import check_series
from usdm_simulator.symbols import KNOWN_SYMBOLS, check_known

FaultKind = Literal[
    "latency",
    "http_500",
    "http_502",
    "http_503_unavailable",
    "throttled_1008",
    "waf_403",
    "unknown_error_executed",
    "unknown_error_not_executed",
    "timeout_1007",
    "drop_after_accept",
    "user_stream_silent",
    "user_stream_drop",
    "clock_offset_ms",
]


class AccountConfig(BaseModel):
    """One exchange account: API key, secret, starting USDT wallet balance and, optionally, its own
    ORDERS limits (Binance sets them per account; unset, the account has ``rate_limits``' ones)."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1)
    secret: str = Field(min_length=1)
    balance_usdt: Decimal = Decimal("100000")
    leverage: int = Field(default=20, ge=1, le=125)
    orders_per_10s: int | None = Field(
        default=None, ge=1, description="this account's ORDERS per 10 s (default: rate_limits.orders_per_10s)"
    )
    orders_per_minute: int | None = Field(
        default=None,
        ge=1,
        description="this account's ORDERS per minute (default: rate_limits.orders_per_minute)",
    )


class FaultConfig(BaseModel):
    """A fault to arm: which endpoint, what kind, how often (probability or next ``count`` calls).

    ``endpoint`` is ``"METHOD /path"`` (e.g. ``"POST /fapi/v1/order"``) or ``"*"`` for every REST call;
    user-stream kinds ignore it. With ``count`` set the fault fires on the next ``count`` matching calls and
    is then spent; otherwise it fires with ``probability`` on every matching call until cleared.
    """

    model_config = ConfigDict(extra="forbid")

    endpoint: str = "*"
    kind: FaultKind
    probability: float = Field(default=1.0, ge=0.0, le=1.0)
    count: int | None = Field(default=None, ge=1)
    latency_ms: int = Field(default=0, ge=0)
    offset_ms: int = 0
    http_status: int | None = Field(default=None, ge=100, le=599)
    executed: bool = False


class RateLimitConfig(BaseModel):
    """Binance's limits: request weight per IP per minute, orders per account per 10 s and per minute.

    With ``enabled`` false (``--no-rate-limits``, load tests only) nothing is enforced: requests are still
    counted for the ``X-MBX-USED-WEIGHT-1M`` / ``X-MBX-ORDER-COUNT-*`` headers but never get 429 or 418.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    weight_per_minute: int = Field(default=2400, ge=1)
    orders_per_10s: int = Field(default=300, ge=1)
    orders_per_minute: int = Field(default=1200, ge=1)
    requests_after_429_before_ban: int = Field(default=3, ge=0)
    ban_seconds: int = Field(default=120, ge=1)


class SimulatorConfig(BaseSettings):
    """Everything the simulator needs to start; every field has a working default."""

    model_config = SettingsConfigDict(env_prefix="SIM_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    accounts: list[AccountConfig] = Field(default_factory=list)
    symbols: list[str] = Field(
        default_factory=lambda: list(KNOWN_SYMBOLS),
        description="contracts served, a subset of usdm_simulator/data/usdm_perpetuals.json (default: all)",
    )
    reference_prices: dict[str, Decimal] = Field(default_factory=dict)
    symbol_overrides: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="per symbol, SymbolSpec fields to replace, e.g. {'BTCUSDT': {'min_qty': '0.01'}}",
    )
    seed: int = 1
    walk_interval_ms: int = Field(default=1000, ge=0)
    walk_step_bps: Decimal = Field(default=Decimal("2"), ge=0)
    matching: Literal["book", "reference"] = Field(
        default="book",
        description="book: orders walk a per-symbol order book; reference: they trade at the reference price",
    )
    liquidity_qty: dict[str, Decimal] = Field(default_factory=dict)
    maker_fee_rate: Decimal = Decimal("0.0002")
    taker_fee_rate: Decimal = Decimal("0.0005")
    max_num_orders: int = Field(default=200, ge=1)
    listen_key_ttl_s: float = Field(default=3600.0, gt=0)
    time_scale: float = Field(default=1.0, gt=0)
    ws_ping_interval_s: float = Field(default=180.0, gt=0)
    market_ws_max_streams: int = Field(
        default=1024, ge=1, description="streams one market websocket connection may hold (Binance: 1024)"
    )
    market_ws_max_messages_per_s: int = Field(
        default=10,
        ge=1,
        description="incoming messages per second on a market connection before it is closed (Binance: 10); "
        "not enforced with rate_limits.enabled false",
    )
    max_recv_window_ms: int = Field(default=60000, ge=1)
    rate_limits: RateLimitConfig = Field(default_factory=RateLimitConfig)
    faults: list[FaultConfig] = Field(default_factory=list)
    journal_size: int = Field(default=100000, ge=1)
    replay: dict[str, Path] = Field(
        default_factory=dict,
        description="per symbol, a trades or klines CSV driving its reference price (usdm_simulator.replay)",
    )
    replay_speed: float = Field(default=1.0, gt=0, description="replay time factor: 1 real time, 10 faster")

    @field_validator("symbols")
    @classmethod
    def _known_symbols(cls, value: list[str]) -> list[str]:
        """Upper-case and strip the names; ValueError for one not in the data file (lists the known)."""
        symbols = [s.strip().upper() for s in value if s.strip()]
        check_known(symbols)
        return symbols

    @model_validator(mode="after")
    def _unique_account_keys(self) -> SimulatorConfig:
        """ValueError for two accounts with one API key (the key is how a request names its account)."""
        first: dict[str, int] = {}
        for index, account in enumerate(self.accounts):
            earlier = first.setdefault(account.key, index)
            if earlier != index:
                raise ValueError(
                    f"accounts[{index}].key: the same API key as accounts[{earlier}]; "
                    "each account needs its own"
                )
        return self

    @model_validator(mode="after")
    def _check_replay(self) -> SimulatorConfig:
        """Upper-case replay symbols; ValueError for one not served or a file that is not a usable series
        (the message names the file and line). Reads every replay file once."""
        self.replay = {s.strip().upper(): p for s, p in self.replay.items()}
        unknown = sorted(set(self.replay) - set(self.symbols))
        if unknown:
            raise ValueError(f"replay: symbols not served: {', '.join(unknown)}")
        for path in self.replay.values():
            check_series(path)
        return self

    def scaled_seconds(self, seconds: float) -> float:
        """Convert an exchange duration (e.g. the 60-minute listenKey life) to wall seconds."""
        return seconds / self.time_scale


def load_config(path: Path | None = None, **overrides: Any) -> SimulatorConfig:
    """Build the settings from an optional YAML file (a mapping of field names) plus explicit overrides.

    Raises ``pydantic.ValidationError`` naming the bad key, or ``ValueError`` if the YAML is not a mapping.
    """
    data: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(path.read_text())
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: the simulator config must be a YAML mapping")
        data.update(loaded)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return SimulatorConfig(**data)
