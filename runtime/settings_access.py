"""The settings sections about who reaches the service and how: the gRPC server and its TLS,
API keys (`auth`), and the command-line client's own settings (`client`).

Each key's type, default, bounds and meaning; `runtime.settings` holds and loads them.
"""

from __future__ import annotations

import hashlib

from pydantic import Field, SecretStr, model_validator

from order_execution.runtime.settings_sections import Section


class TlsSettings(Section):
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


class ServerSettings(Section):
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


def hash_key(key: str) -> str:
    """The hex SHA-256 of an API key, as `auth.clients[].key_sha256` holds it (the gateway compares
    a caller's key against it; `up` writes it for its local key)."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiClientSettings(Section):
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
    accounts: list[str] = Field(
        default_factory=list, description="exchange accounts it may trade and see; empty = every account"
    )
    default_account: str = Field(
        "", description="the account of a request that names none; empty = its first account"
    )

    def may_trade(self, account: str) -> bool:
        return not self.accounts or account in self.accounts


class AuthSettings(Section):
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


class ClientSettings(Section):
    """How `order-execution order` talks to the gateway."""

    api_key: SecretStr = Field(
        SecretStr(""),
        description="sent as x-api-key ($ORDER_EXECUTION_API_KEY); empty = .run/api-key if present",
    )
    tls_ca_file: str = Field("", description="CA (PEM) that signed the gateway's certificate; set = use TLS")
    tls_cert_file: str = Field("", description="client certificate (PEM) for mutual TLS")
    tls_key_file: str = Field("", description="its private key (PEM)")
