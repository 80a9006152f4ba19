"""The chaos checker per exchange account: each order against the simulator's record of ITS account.

The simulator's /admin/orders, /admin/algo-orders and /admin/trades rows carry the API key
of the account that placed them (`account`). `verify_by_account` splits the test's orders
by the account each was created on and runs the one-account checker (tests/chaos/verify.py)
on each account's orders, that account's rows and the stream updates of its orders. An
order the exchange holds under another account's key, or that the service records on
another account, is mismatched, counted for the account it was created on: the other
account's check never sees it, so it is not also "at the exchange but never created".

Pure functions over plain data, tested without processes (tests/chaos/test_chaos_checker.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tests.chaos.verify import OrderView, StreamRecord, Verdict, verify


def account_line(account: str, verdict: Verdict) -> str:
    """The line a chaos run prints for one account: `account <name>: lost = 0, ...`."""
    return f"account {account}: {verdict.line()}"


def total(verdicts: Mapping[str, Verdict]) -> Verdict:
    """Every account's findings and counts added up into one verdict (for the `total:` line)."""
    out = Verdict()
    for account, verdict in verdicts.items():
        out.lost += [f"account {account}: {item}" for item in verdict.lost]
        out.duplicated += [f"account {account}: {item}" for item in verdict.duplicated]
        for cid, problems in verdict.mismatched.items():
            out.mismatched.setdefault(cid, []).extend(f"account {account}: {p}" for p in problems)
        out.checked_orders += verdict.checked_orders
        out.checked_fills += verdict.checked_fills
        out.stream_updates += verdict.stream_updates
        out.never_accepted += verdict.never_accepted
    return out


def verify_by_account(
    accepted: Mapping[str, str | None],
    created_on: Mapping[str, str],
    account_keys: Mapping[str, str],
    service: Mapping[str, OrderView | None],
    sim_orders: Sequence[Mapping[str, Any]],
    sim_trades: Sequence[Mapping[str, Any]],
    streams: Sequence[StreamRecord],
    prefix: str,
    sim_algo_orders: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Verdict]:
    """One verdict per account of `account_keys` (account name -> its API key at the simulator).

    `created_on`: client order id -> the account the test created it on (every id of
    `accepted` must be there, else KeyError). The other arguments are `verify`'s, for every
    account at once: the simulator's rows are told apart by their `account` key, the
    stream clients' updates by the order they are for. Besides `verify`'s findings, an order
    is mismatched if the exchange holds it (or, for a conditional order, its algo order)
    under another account's key, or if the service's record names another account.
    """
    owner_of_key = {key: name for name, key in account_keys.items()}
    verdicts = {name: Verdict() for name in account_keys}

    def rows_of(rows: Sequence[Mapping[str, Any]], cid_key: str) -> dict[str, list[Mapping[str, Any]]]:
        """`rows` by the account whose check reads them; a test order's row under another
        account's key is reported against the account it was created on, and read by none."""
        split: dict[str, list[Mapping[str, Any]]] = {name: [] for name in account_keys}
        for row in rows:
            holder = owner_of_key.get(str(row.get("account", "")))
            cid = str(row.get(cid_key, ""))
            mine = created_on.get(cid) if cid.startswith(prefix) else None
            if mine is not None and holder != mine:
                where = f"account {holder}'s key" if holder else f"an unknown key {row.get('account')!r}"
                verdicts[mine].mismatch(cid, f"at the exchange under {where}, not account {mine}'s")
            elif holder is not None:
                split[holder].append(row)
        return split

    orders_by, algos_by = rows_of(sim_orders, "clientOrderId"), rows_of(sim_algo_orders, "clientAlgoId")
    trades_by: dict[str, list[Mapping[str, Any]]] = {name: [] for name in account_keys}
    for row in sim_trades:  # a trade is its order's: read by the check of the account holding it
        holder = owner_of_key.get(str(row.get("account", "")))
        if holder is not None:
            trades_by[holder].append(row)

    for name, verdict in verdicts.items():
        cids = [cid for cid in accepted if created_on[cid] == name]
        mine = {cid: service.get(cid) for cid in cids}
        for cid, view in mine.items():
            if view is not None and view.account != name:
                verdict.mismatch(cid, f"the service has it on account {view.account!r}, created on {name!r}")
        order_ids = {view.order_id for view in mine.values() if view is not None}
        records = [
            StreamRecord(s.name, [e for e in s.events if e.order_id in order_ids], s.checked) for s in streams
        ]
        found = verify(
            {cid: accepted[cid] for cid in cids},
            mine,
            orders_by[name],
            trades_by[name],
            records,
            prefix,
            algos_by[name],
        )
        for cid, problems in verdict.mismatched.items():  # the cross-account findings first
            found.mismatched[cid] = problems + found.mismatched.get(cid, [])
        verdicts[name] = found
    return verdicts
