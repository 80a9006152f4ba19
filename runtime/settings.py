"""Service settings: one typed object built once per process at start.

Sources, highest priority first:
1. the original service's environment names (`BINANCE_API_KEY`, `BINANCE_SECRET_KEY`,
   `BINANCE_TESTNET`, `REDIS_ADDRESS`, `REDIS_PASSWORD`, `NATS_ADDRESS`, `LOG_LEVEL`,
   `LOG_FORMAT`), and `BINANCE_BASE_URL` and `ORDER_EXECUTION_API_KEY` (the CLI's key);
2. any key as `ORDER_EXECUTION__SECTION__KEY` (e.g. `ORDER_EXECUTION__SERVER__GRPC_PORT`);
3. the YAML file (`--config`, else `$ORDER_EXECUTION_CONFIG`, else `./config.yaml` if present),
   after `${VAR}` / `${VAR:-default}` expansion from the environment;
4. defaults.

A bad value raises `SettingsError` naming the key, e.g. "server.grpc_port: Input should be
a valid integer".

The sections (each key's type, default and bounds) are in runtime/settings_sections.py,
runtime/settings_access.py and runtime/settings_connections.py; they are re-exported here,
with the `Settings` object that holds them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pydantic_settings
import yaml
from pydantic import BaseModel, Field, PrivateAttr, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from order_execution.runtime.addresses import is_loopback_host, without_password
from order_execution.runtime.settings_access import (
    ApiClientSettings,
    AuthSettings,
    ClientSettings,
    ServerSettings,
    TlsSettings,
)
from order_execution.runtime.settings_accounts import (
    DEFAULT_ACCOUNT,
    Account,
    AccountSettings,
    resolve_accounts,
)
from order_execution.runtime.settings_connections import (
    ExchangeSettings,
    NatsSettings,
    RedisSettings,
)
from order_execution.runtime.settings_sections import (
    AdmissionSettings,
    CircuitBreakerSettings,
    DashboardSettings,
    DeadManSettings,
    ListenerSettings,
    LoggingSettings,
    MonitoringSettings,
    PerformanceSettings,
    RateLimitSettings,
    ReconcileSettings,
    RiskSettings,
    WorkerSettings,
)

CONFIG_ENV = "ORDER_EXECUTION_CONFIG"

_SEED_ENV: dict[str, tuple[str, str]] = {
    "BINANCE_API_KEY": ("exchange", "api_key"),
    "BINANCE_SECRET_KEY": ("exchange", "secret_key"),
    "BINANCE_TESTNET": ("exchange", "testnet"),
    "BINANCE_BASE_URL": ("exchange", "base_url"),
    "REDIS_ADDRESS": ("redis", "address"),
    "REDIS_PASSWORD": ("redis", "password"),
    "NATS_ADDRESS": ("nats", "address"),
    "LOG_LEVEL": ("logging", "level"),
    "LOG_FORMAT": ("logging", "format"),
    "ORDER_EXECUTION_API_KEY": ("client", "api_key"),
}

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class SettingsError(ValueError):
    """The configuration is invalid; the message names each bad key and what it must be.

    Raised at start (or by a runtime change of limits), before any order is touched; not an
    `OrderServiceError`, since the settings sit below the order domain."""


class Settings(BaseSettings):
    """Every setting of every process."""

    model_config = SettingsConfigDict(
        env_prefix="ORDER_EXECUTION__", env_nested_delimiter="__", extra="forbid"
    )

    server: ServerSettings = ServerSettings()
    exchange: ExchangeSettings = ExchangeSettings()
    redis: RedisSettings = RedisSettings()
    nats: NatsSettings = NatsSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    admission: AdmissionSettings = AdmissionSettings()
    risk: RiskSettings = RiskSettings()
    circuit_breaker: CircuitBreakerSettings = CircuitBreakerSettings()
    worker: WorkerSettings = WorkerSettings()
    listener: ListenerSettings = ListenerSettings()
    reconcile: ReconcileSettings = ReconcileSettings()
    dead_man: DeadManSettings = DeadManSettings()
    performance: PerformanceSettings = PerformanceSettings()
    logging: LoggingSettings = LoggingSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    auth: AuthSettings = AuthSettings()
    client: ClientSettings = ClientSettings()
    dashboard: DashboardSettings = DashboardSettings()
    symbols: list[str] = Field(
        default_factory=lambda: ["BTCUSDT", "ETHUSDT"],
        description="Symbols that get a queue; workers consume these.",
    )
    accounts: list[AccountSettings] = Field(
        default_factory=list,
        description="the exchange accounts traded (runtime/settings_accounts.py); empty = the exchange "
        "section's key as the one account `default`",
    )
    _accounts: tuple[Account, ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _accounts_resolve(self) -> Settings:
        names = [account.name for account in self.accounts]
        if len(set(names)) != len(names):
            raise ValueError("accounts: names must be unique")
        self._accounts = resolve_accounts(self.accounts, self.exchange)
        known = {account.name for account in self._accounts}
        for client in self.auth.clients:
            for name in [*client.accounts, *([client.default_account] if client.default_account else [])]:
                if name not in known:
                    raise ValueError(
                        f"auth.clients {client.name}: account {name!r} is not in accounts "
                        f"({', '.join(sorted(known))})"
                    )
            if client.default_account and client.accounts and client.default_account not in client.accounts:
                raise ValueError(
                    f"auth.clients {client.name}: default_account {client.default_account!r} "
                    "is not one of its accounts"
                )
        return self

    @property
    def trading_accounts(self) -> tuple[Account, ...]:
        """Every account traded here, in the order configured (the first is the default)."""
        return self._accounts

    @property
    def account_names(self) -> list[str]:
        return [account.name for account in self._accounts]

    def account(self, name: str) -> Account:
        """The account named `name`; KeyError if there is none."""
        for account in self._accounts:
            if account.name == name:
                return account
        raise KeyError(name)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _SeedEnvSource(settings_cls), env_settings, _YamlSource(settings_cls))

    def secret_values(self) -> list[str]:
        """Every secret value set, whatever its source (environment, YAML file, default): each
        SecretStr, and the password of any URL-valued setting (e.g. a `redis.address` URL)."""
        return sorted(_secrets_in(self))


def _secrets_in(model: BaseModel) -> set[str]:
    found: set[str] = set()
    for name in type(model).model_fields:
        value = getattr(model, name)
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, SecretStr) and item.get_secret_value():
                found.add(item.get_secret_value())
            elif isinstance(item, BaseModel):
                found |= _secrets_in(item)
            elif isinstance(item, str) and "://" in item:
                found |= _url_passwords(item)
    return found


def _url_passwords(text: str) -> set[str]:
    """The passwords (as written and decoded) of the URLs in `text` (comma-separated lists too)."""
    found: set[str] = set()
    for part in text.split(","):
        try:
            password = urlsplit(part.strip()).password
        except ValueError:
            continue
        if password:
            found |= {password, unquote(password)}
    return found


class _SeedEnvSource(PydanticBaseSettingsSource):
    """The original service's flat environment names."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        data: dict[str, dict[str, str]] = {}
        for env_name, (section, key) in _SEED_ENV.items():
            if env_name in os.environ:
                data.setdefault(section, {})[key] = os.environ[env_name]
        return data


class _YamlSource(PydanticBaseSettingsSource):
    """The YAML file chosen by `load_settings`, with `${VAR}` expanded."""

    path: Path | None = None

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        text = expand_env(self.path.read_text())
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise SettingsError(f"{self.path}: not valid YAML: {_yaml_problem(exc)}") from None
        if not isinstance(data, dict):
            raise SettingsError(f"{self.path}: the top level must be a mapping of sections")
        return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where (line, column), without the quoted source line: it may hold a secret."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = exc.problem or exc.context or "syntax error"
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return type(exc).__name__


_SECRET_NAME = re.compile(r"key|secret|password|passwd|token|credential|auth", re.IGNORECASE)


def _shown_input(err: Any) -> str:
    """ " (got <value>)" for a validation error, unless the value may be a secret.

    Hidden: mappings (whole sections), values of keys whose name says secret (key, secret,
    password, token, credential, auth: SecretStr fields are all named so), and values
    of unknown keys, which may be a mistyped secret.
    """
    got = err.get("input")
    if isinstance(got, dict):
        return ""
    if err.get("type") == "extra_forbidden" or any(_SECRET_NAME.search(str(p)) for p in err["loc"]):
        return " (value hidden)"
    if isinstance(got, str) and "://" in got:
        got = ",".join(without_password(part) for part in got.split(","))
    return f" (got {got!r})"


def refuse_open_without_auth(settings: Settings, process: str) -> None:
    """Raise SettingsError if `process` would listen on a non-loopback `server.host` with auth off.

    The gateway checks it before binding its gRPC and HTTP ports, the worker and the listener
    before their /metrics (same host): an unauthenticated service is for this machine only.
    """
    host = settings.server.host
    if settings.auth.enabled or is_loopback_host(host):
        return
    raise SettingsError(
        f"{process}: server.host is {host or '(empty: every address)'}, not loopback, and auth.enabled "
        "is false: anyone who reaches it could trade. Turn authentication on (auth.enabled: true with "
        "auth.clients; `up` makes a local key), or bind loopback only (server.host: 127.0.0.1)"
    )


def expand_env(text: str) -> str:
    """Replace `${VAR}` and `${VAR:-default}` with environment values (missing = empty/default)."""
    return _VAR.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), text)


def config_path(explicit: str | Path | None = None) -> Path | None:
    """The YAML file to read: the explicit one, `$ORDER_EXECUTION_CONFIG`, or ./config.yaml if it exists."""
    chosen = explicit or os.environ.get(CONFIG_ENV)
    if chosen:
        path = Path(chosen)
        if not path.is_file():
            raise SettingsError(f"config file {path} does not exist; copy config.example.yaml to start")
        return path
    default = Path("config.yaml")
    return default if default.is_file() else None


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from the sources in the module docstring.

    Raises SettingsError with one line per invalid key.
    """
    _YamlSource.path = config_path(path)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(part) for part in err["loc"])
            lines.append(f"  {key}: {err['msg']}{_shown_input(err)}")
        source = f" in {_YamlSource.path} or the environment" if _YamlSource.path else " in the environment"
        raise SettingsError("invalid configuration" + source + ":\n" + "\n".join(lines)) from None
    except pydantic_settings.SettingsError as exc:  # a list or mapping in the environment is not JSON
        raise SettingsError(
            f"invalid configuration in the environment: {exc}. Lists and mappings are JSON there, "
            """e.g. ORDER_EXECUTION__SYMBOLS='["BTCUSDT", "ETHUSDT"]'"""
        ) from None


__all__ = [
    "CONFIG_ENV",
    "DEFAULT_ACCOUNT",
    "Account",
    "AccountSettings",
    "AdmissionSettings",
    "ApiClientSettings",
    "AuthSettings",
    "CircuitBreakerSettings",
    "ClientSettings",
    "DashboardSettings",
    "DeadManSettings",
    "ExchangeSettings",
    "ListenerSettings",
    "LoggingSettings",
    "MonitoringSettings",
    "NatsSettings",
    "PerformanceSettings",
    "RateLimitSettings",
    "ReconcileSettings",
    "RedisSettings",
    "RiskSettings",
    "ServerSettings",
    "Settings",
    "SettingsError",
    "TlsSettings",
    "WorkerSettings",
    "config_path",
    "expand_env",
    "load_settings",
    "refuse_open_without_auth",
]
