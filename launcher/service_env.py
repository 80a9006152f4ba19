"""The environment (settings as variables) the launcher gives the processes it starts."""

from __future__ import annotations

from pathlib import Path

from order_execution.runtime.settings_access import hash_key

REPO = Path(__file__).resolve().parents[1]  # the checkout the launcher runs from


def isolated_env() -> dict[str, str]:
    """What every process of a test or bench stack gets: this checkout on the import path, and no
    config file (the settings come from the environment alone, not from a ./config.yaml)."""
    return {"PYTHONPATH": str(REPO), "ORDER_EXECUTION_CONFIG": ""}


def gateway_port_env(grpc_port: int, http_port: int) -> dict[str, str]:
    """The settings that put a gateway's gRPC and HTTP servers on these ports."""
    return {
        "ORDER_EXECUTION__SERVER__GRPC_PORT": str(grpc_port),
        "ORDER_EXECUTION__SERVER__HTTP_PORT": str(http_port),
    }


def metrics_port_env(kind: str, port: int | None) -> dict[str, str]:
    """The setting that puts a worker's or listener's (`kind`) /metrics on `port`; none for None."""
    return {} if port is None else {f"ORDER_EXECUTION__MONITORING__{kind.upper()}_METRICS_PORT": str(port)}


def local_client_json(key: str) -> str:
    """`auth.clients` for the local key, as JSON for `ORDER_EXECUTION__AUTH__CLIENTS`: its hash only
    (`key_sha256`, the hex SHA-256 the gateway compares a caller's key against).

    The local key is the operator's own (whoever runs `up`), so it also holds the admin role:
    `order-execution risk` and `account` work with no setup, as `order` does; it names no
    `accounts`, so it may trade every account the service has (`up --accounts N`).
    """
    return f'[{{"name": "local", "key_sha256": "{hash_key(key)}", "admin": true}}]'
