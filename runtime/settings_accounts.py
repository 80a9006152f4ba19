"""The exchange accounts one deployment trades: `accounts:` in the settings, resolved to `Account`s.

Each account has its own API key and secret (from the environment through `${VAR}` in the
YAML, or from files: never written in the YAML in clear), its own ORDERS budget at the
exchange, its own user-data stream, risk limits and kill switch. Accounts whose requests
leave through the same IP share that IP's REQUEST_WEIGHT budget: they name the same `egress`.

With no `accounts:` the `exchange` section's key and secret are one account named
`default`, so a single-account configuration works unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, SecretStr, model_validator

from order_execution.runtime.settings_connections import ExchangeSettings
from order_execution.runtime.settings_sections import Section

DEFAULT_ACCOUNT = "default"  # the account of a single-account configuration (and of older orders)
ACCOUNT_NAME = r"^[a-z][a-z0-9_-]{0,31}$"  # lower case: queue names put it next to upper-case symbols
DEFAULT_EGRESS = "default"
RESERVED_NAMES = frozenset({"other"})  # the metrics' label for an account not in the settings


class AccountSettings(Section):
    """One exchange account: its name, its key and secret, where it trades and through which IP."""

    name: str = Field(pattern=ACCOUNT_NAME, description="lower-case letters, digits, '-' and '_'")
    api_key: SecretStr = Field(SecretStr(""), description="as ${ENV_VAR} in the YAML; or api_key_file")
    secret_key: SecretStr = Field(SecretStr(""), description="as ${ENV_VAR} in the YAML; or secret_key_file")
    api_key_file: str = Field("", description="a file holding the API key (e.g. a mounted secret)")
    secret_key_file: str = Field("", description="a file holding the secret key")
    base_url: str = Field("", description="this account's REST URL; empty = exchange.base_url")
    egress: str = Field(
        DEFAULT_EGRESS,
        pattern=ACCOUNT_NAME,
        description="accounts whose requests leave through the same IP name the same egress: they "
        "share its REQUEST_WEIGHT budget (Binance counts weight per IP, orders per account)",
    )

    @model_validator(mode="after")
    def _key_and_secret(self) -> AccountSettings:
        if self.name in RESERVED_NAMES:
            raise ValueError(f"name {self.name!r} is reserved (metrics label accounts not configured so)")
        for key, file_key in (("api_key", "api_key_file"), ("secret_key", "secret_key_file")):
            value: SecretStr = getattr(self, key)
            path = getattr(self, file_key)
            if value.get_secret_value() and path:
                raise ValueError(f"set {key} or {file_key}, not both")
            if path:
                setattr(self, key, SecretStr(_read_secret_file(path, file_key)))
        return self


def _read_secret_file(path: str, key: str) -> str:
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"{key} {path} cannot be read: {exc.strerror}") from None
    if not text:
        raise ValueError(f"{key} {path} is empty")
    return text


@dataclass(frozen=True)
class Account:
    """An account as the processes use it: `exchange` is the exchange section with this
    account's key, secret and URL, so anything built from an `ExchangeSettings` works per account."""

    name: str
    exchange: ExchangeSettings
    egress: str = DEFAULT_EGRESS


def resolve_accounts(accounts: list[AccountSettings], exchange: ExchangeSettings) -> tuple[Account, ...]:
    """The configured accounts, or the `exchange` section's own key as the account `default`."""
    if not accounts:
        return (Account(DEFAULT_ACCOUNT, exchange),)
    return tuple(Account(entry.name, _account_exchange(entry, exchange), entry.egress) for entry in accounts)


def _account_exchange(entry: AccountSettings, exchange: ExchangeSettings) -> ExchangeSettings:
    """The exchange section with `entry`'s key, secret and URL, validated again (the URL's TLS rule)."""
    fields = exchange.model_dump()
    fields.update(
        api_key=entry.api_key, secret_key=entry.secret_key, base_url=entry.base_url or exchange.base_url
    )
    return ExchangeSettings.model_validate(fields)
