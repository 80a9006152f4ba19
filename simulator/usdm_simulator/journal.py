"""The inspection log: every request the simulator received, with its outcome, for ``GET /admin/requests``."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass
class RequestRecord:
    """One received request: what was asked, by whom, when, and what the exchange answered.

    ``account`` is the key of the account whose API key (``X-MBX-APIKEY``) the request carried, when it
    names a known account, whatever the answer: a request refused before authentication (429 or 418 for
    its IP) still counts for that account. ``None`` for a request with no or an unknown key.
    """

    seq: int
    time_ms: int
    method: str
    path: str
    params: dict[str, str]
    account: str | None
    ip: str
    status: int = 0
    error_code: int | None = None
    fault: str | None = None

    @property
    def client_order_id(self) -> str | None:
        """The client order id the request names (new or original), if any."""
        return self.params.get("newClientOrderId") or self.params.get("origClientOrderId")

    def to_json(self) -> dict[str, Any]:
        """Render for the admin API."""
        return {
            "seq": self.seq,
            "time": self.time_ms,
            "method": self.method,
            "path": self.path,
            "params": self.params,
            "account": self.account,
            "ip": self.ip,
            "status": self.status,
            "errorCode": self.error_code,
            "fault": self.fault,
            "clientOrderId": self.client_order_id,
        }


class Journal:
    """A bounded, append-only list of :class:`RequestRecord` (oldest dropped beyond ``size``)."""

    def __init__(self, size: int) -> None:
        self._records: deque[RequestRecord] = deque(maxlen=size)
        self._seq = 0

    def open(self, time_ms: int, method: str, path: str, ip: str) -> RequestRecord:
        """Append and return a record for a request that has just arrived (filled in as it is handled)."""
        self._seq += 1
        record = RequestRecord(self._seq, time_ms, method, path, {}, None, ip)
        self._records.append(record)
        return record

    def clear(self) -> None:
        """Forget every record."""
        self._records.clear()

    def select(self, filters: Mapping[str, str]) -> list[RequestRecord]:
        """Return records matching the optional path, method, clientOrderId, account, status (HTTP) and
        errorCode filters. Raises ValueError naming ``status`` or ``errorCode`` if it is not an integer."""
        status, error_code = _int_filter(filters, "status"), _int_filter(filters, "errorCode")
        out = []
        for r in self._records:
            if "path" in filters and r.path != filters["path"]:
                continue
            if "method" in filters and r.method != filters["method"].upper():
                continue
            if "clientOrderId" in filters and r.client_order_id != filters["clientOrderId"]:
                continue
            if "account" in filters and r.account != filters["account"]:
                continue
            if status is not None and r.status != status:
                continue
            if error_code is not None and r.error_code != error_code:
                continue
            out.append(r)
        return out


def _int_filter(filters: Mapping[str, str], name: str) -> int | None:
    """The integer value of filter ``name``, None if absent; ValueError naming it if not an integer."""
    raw = filters.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
