"""The kill switch's "cancel every open order": the walk, and its completion by whoever is left.

Each switch (an account's, or the one for every account; `orders.trading_switch`) keeps its
own request. `AdminService.SetTradingMode(HALTED, cancel_open)` records it with the mode
(`TradingSwitch.set_mode`), walks the open orders the switch covers here (the account's, or
every account's) and marks the request done (`TradingSwitch.finish_cancel_open`). If the
gateway dies midway, the request stays pending and the leading listener, which checks every
second, finishes it once it is older than `risk.cancel_open_grace_ms`: the same walk, audited
as completed by the listener.

The walk cancels through the ordinary cancel path: an order still NEW is canceled here, one
at the exchange goes to PENDING_CANCEL with a cancel message queued for a worker on its
account's queue (in the same atomic step). It is idempotent: an order already final or
already PENDING_CANCEL is skipped, so two walks over the same orders (the gateway's and the
listener's, or two listeners') cancel each order once.

The queue message is the caller's to build (`tasks.messages.cancel_order_push`): `orders`
knows nothing of the queue contract.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from order_execution.orders import fsm
from order_execution.orders.cancel_open import CANCEL_OPEN_ACTION
from order_execution.orders.model import Order, OrderState, now_ms
from order_execution.orders.risk_state import RiskState, TradingMode
from order_execution.orders.store import OrderStore, QueuePush
from order_execution.orders.trading_switch import TradingSwitch

log = logging.getLogger(__name__)

S = OrderState
CancelPush = Callable[[Order], QueuePush]
LISTENER_ACTION = f"{CANCEL_OPEN_ACTION} (completed by the listener)"
_BATCH = 200


def request_cancel(current: Order) -> Order | None:
    """The cancel step of one order: a NEW order is canceled here; one at the exchange waits
    for its cancel there (PENDING_CANCEL); None when neither move is allowed (final, or a
    cancel already asked for)."""
    if current.state is S.NEW:
        return fsm.transition(current, S.CANCELED, reason="canceled before it was sent")
    return fsm.transition(current, S.PENDING_CANCEL)


def cancel_enqueue(cancel_push: CancelPush) -> Callable[[Order], QueuePush | None]:
    """What `OrderStore.transition` queues after `request_cancel`: the cancel message for an
    order now PENDING_CANCEL, nothing for one canceled locally."""

    def enqueue(updated: Order) -> QueuePush | None:
        return cancel_push(updated) if updated.state is S.PENDING_CANCEL else None

    return enqueue


async def cancel_open_orders(store: OrderStore, cancel_push: CancelPush, account: str | None = None) -> int:
    """Cancel every unsettled order of every client of `account` (None: of every account),
    oldest first (see the module docstring).

    Returns how many orders changed (canceled here, or PENDING_CANCEL with a cancel queued);
    one that ended or was being canceled meanwhile is skipped. Redis errors propagate: the
    request stays pending and is finished later.
    """
    enqueue = cancel_enqueue(cancel_push)
    changed = 0
    after: tuple[int, str] | None = None
    while ids := await store.unsettled(after=after, limit=_BATCH):
        for order in await store.get_many(ids):
            after = (order.created_at, order.order_id)
            if order.state in fsm.FINAL_STATES or (account is not None and order.account != account):
                continue
            result = await store.transition(order.order_id, request_cancel, enqueue=enqueue, current=order)
            changed += int(result.changed)
        if len(ids) < _BATCH:
            break
    return changed


async def finish_overdue_cancel_open(
    state: RiskState,
    store: OrderStore,
    cancel_push: CancelPush,
    *,
    grace_ms: int,
    actor: str,
    accounts: Sequence[str] | None = None,
    every_account: bool = True,
) -> int | None:
    """Finish the cancels of open orders left pending for longer than `grace_ms` by the switch
    for every account (unless `every_account` is false) and by the own switches of `accounts`
    (None: `state`'s account alone).

    A switch's request is left alone while none is pending, while it is younger than
    `grace_ms` (its gateway is still walking), or once its mode is no longer HALTED.
    Otherwise its open orders (every account's, or the account's) are walked, the request
    marked done and audited as completed by `actor` (the listener). Returns how many orders
    changed, or None when no request was finished.
    """
    own = [state.account] if accounts is None else list(accounts)
    switches = ([state.every_account] if every_account else []) + [
        state.for_account(account).switch for account in own
    ]
    finished: int | None = None
    for switch in switches:
        canceled = await _finish_overdue(switch, store, cancel_push, grace_ms=grace_ms, actor=actor)
        if canceled is not None:
            finished = (finished or 0) + canceled
    return finished


async def _finish_overdue(
    switch: TradingSwitch, store: OrderStore, cancel_push: CancelPush, *, grace_ms: int, actor: str
) -> int | None:
    status = await switch.mode()
    request = status.cancel_open
    if request is None or status.mode is not TradingMode.HALTED:
        return None
    if now_ms() - request.requested_at < grace_ms:
        return None
    log.warning(
        "kill switch of %s: the cancel of its open orders requested by %s at %d (Unix ms) did not "
        "complete; completing it",
        status.scope,
        request.requested_by,
        request.requested_at,
    )
    canceled = await cancel_open_orders(store, cancel_push, switch.account)
    await switch.finish_cancel_open(request, actor=actor, canceled=canceled, action=LISTENER_ACTION)
    log.warning(
        "kill switch of %s: %d open orders canceled or being canceled by %s", status.scope, canceled, actor
    )
    return canceled
