"""The kill switch's "cancel every open order": the walk, and its completion by whoever is left.

`AdminService.SetTradingMode(HALTED, cancel_open)` records the request with the mode
(`RiskState.set_mode`), walks the open orders here and marks the request done
(`RiskState.finish_cancel_open`). If the gateway dies midway, the request stays pending and
the leading listener, which checks every second, finishes it once it is older than
`risk.cancel_open_grace_ms`: the same walk, audited as completed by the listener.

The walk cancels through the ordinary cancel path: an order still NEW is canceled here, one
at the exchange goes to PENDING_CANCEL with a cancel message queued for a worker (in the same
atomic step). It is idempotent: an order already final or already PENDING_CANCEL is skipped,
so two walks over the same orders (the gateway's and the listener's) cancel each order once.

The queue message is the caller's to build (`tasks.messages.cancel_order_push`): `orders`
knows nothing of the queue contract.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from order_execution.orders import fsm
from order_execution.orders.cancel_open import CANCEL_OPEN_ACTION
from order_execution.orders.model import Order, OrderState, now_ms
from order_execution.orders.risk_state import RiskState, TradingMode
from order_execution.orders.store import OrderStore, QueuePush

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


async def cancel_open_orders(store: OrderStore, cancel_push: CancelPush) -> int:
    """Cancel every unsettled order of every client, oldest first (see the module docstring).

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
            if order.state in fsm.FINAL_STATES:
                continue
            result = await store.transition(order.order_id, request_cancel, enqueue=enqueue, current=order)
            changed += int(result.changed)
        if len(ids) < _BATCH:
            break
    return changed


async def finish_overdue_cancel_open(
    state: RiskState, store: OrderStore, cancel_push: CancelPush, *, grace_ms: int, actor: str
) -> int | None:
    """Finish a cancel of the open orders left pending for longer than `grace_ms`.

    Does nothing (returns None) when none is pending, when it is younger than `grace_ms` (its
    gateway is still walking), or when the mode is no longer HALTED. Otherwise walks the open
    orders, marks the request done and audits it as completed by `actor` (the listener);
    returns how many orders changed.
    """
    status = await state.mode()
    request = status.cancel_open
    if request is None or status.mode is not TradingMode.HALTED:
        return None
    if now_ms() - request.requested_at < grace_ms:
        return None
    log.warning(
        "kill switch: the cancel of every open order requested by %s at %d (Unix ms) did not complete; "
        "completing it",
        request.requested_by,
        request.requested_at,
    )
    canceled = await cancel_open_orders(store, cancel_push)
    await state.finish_cancel_open(request, actor=actor, canceled=canceled, action=LISTENER_ACTION)
    log.warning("kill switch: %d open orders canceled or being canceled by %s", canceled, actor)
    return canceled
