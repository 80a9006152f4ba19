"""The environment (settings as variables) the launcher gives the service's processes."""

from __future__ import annotations

import hashlib


def local_client_json(key: str) -> str:
    """`auth.clients` for the local key, as JSON for `ORDER_EXECUTION__AUTH__CLIENTS`: its hash only
    (`key_sha256`, the hex SHA-256 the gateway compares a caller's key against).

    The local key is the operator's own (whoever runs `up`), so it also holds the admin role:
    `order-execution risk` and `account` work with no setup, as `order` does.
    """
    key_sha256 = hashlib.sha256(key.encode()).hexdigest()
    return f'[{{"name": "local", "key_sha256": "{key_sha256}", "admin": true}}]'
