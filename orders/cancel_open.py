"""A HALTED kill switch's cancel of every open order, as recorded in Redis.

`RiskState.set_mode` writes the request with the mode, in one transaction, before any
order is walked; whoever walks the open orders (`service_layer.kill_switch`, or the leading
listener when the gateway that took it died midway) marks it DONE; leaving HALTED first
marks it DROPPED. The record is the hash `{namespace}:risk:cancel_open`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from order_execution.runtime.redis_connection import reply_text

CANCEL_OPEN_ACTION = "cancel open orders"  # the audit action of a completed walk over the open orders


class CancelOpenState(StrEnum):
    """Where a kill switch's cancel of every open order stands."""

    PENDING = "PENDING"  # asked for; the walk over the open orders has not completed
    DONE = "DONE"  # the walk completed (every open order canceled or its cancel queued)
    DROPPED = "DROPPED"  # the mode left HALTED before it completed: the operator changed their mind


@dataclass(frozen=True, slots=True)
class CancelOpenRequest:
    """A HALTED switch's order to cancel every open order, as recorded in Redis."""

    request_id: str
    requested_by: str
    requested_at: int  # Unix ms
    reason: str = ""
    state: CancelOpenState = CancelOpenState.PENDING
    done_by: str = ""
    done_at: int = 0  # Unix ms; 0 while pending
    canceled_orders: int = 0

    @property
    def pending(self) -> bool:
        return self.state is CancelOpenState.PENDING

    def fields(self) -> dict[str, str]:
        """Every field of the record's hash."""
        return {
            "id": self.request_id,
            "requested_by": self.requested_by,
            "requested_at": str(self.requested_at),
            "reason": self.reason,
            "state": self.state.value,
            "done_by": self.done_by,
            "done_at": str(self.done_at),
            "canceled": str(self.canceled_orders),
        }

    @classmethod
    def from_fields(cls, raw: Mapping[bytes | str, bytes | str]) -> CancelOpenRequest | None:
        """The request a hash as Redis returned it holds, or None for an empty one (none asked for)."""
        f = {reply_text(k): reply_text(v) for k, v in raw.items()}
        if not f.get("id"):
            return None
        return cls(
            f["id"],
            f.get("requested_by", ""),
            int(f.get("requested_at", "0")),
            f.get("reason", ""),
            CancelOpenState(f.get("state", CancelOpenState.PENDING.value)),
            f.get("done_by", ""),
            int(f.get("done_at", "0")),
            int(f.get("canceled", "0")),
        )
