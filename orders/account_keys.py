"""Where an exchange account's own Redis keys live: its client ids, unsent indexes and risk state.

Binance scopes client order ids and ORDERS limits per account, so these keys are too. The
account `default` keeps the names a single-account deployment always used (directly under
the namespace), so upgrading one changes no key; any other account's keys sit under
`<namespace>:@<account>` ('@' keeps them apart from every other key of the namespace).
"""

from __future__ import annotations

from order_execution.orders.model import DEFAULT_ACCOUNT


def account_prefix(namespace: str, account: str) -> str:
    """The prefix of `account`'s own keys in `namespace`."""
    return namespace if account == DEFAULT_ACCOUNT else f"{namespace}:@{account}"
