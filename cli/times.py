"""Times as the CLI reads and shows them: ISO 8601 with the zone offset, or relative ages."""

from __future__ import annotations

import re
import time
from datetime import datetime

_RELATIVE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(s|m|h|d|w)")  # fullmatch; ASCII digits only
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def format_ms(ms: int) -> str:
    """Unix milliseconds as local ISO 8601 with offset, e.g. 2026-12-04T18:20:01.123+00:00; 0 gives "-"."""
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000).astimezone().isoformat(timespec="milliseconds")


def parse_time(text: str, *, now_ms: int | None = None) -> int:
    """Unix milliseconds for `text`: an age before now (`90s`, `10m`, `2h`, `1d`, `1w`) or an ISO
    8601 date or datetime (`2026-12-04`, `2026-12-04T10:00`, `...+02:00`; no offset = local time).

    Raises ValueError naming the accepted forms.
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    cleaned = text.strip().lower()
    if cleaned == "now":
        return now
    relative = _RELATIVE.fullmatch(cleaned)
    if relative:
        return now - int(float(relative.group(1)) * _UNIT_S[relative.group(2)] * 1000)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use an age like 90s, 10m, 2h, 1d, 1w, "
            "or an ISO date/time like 2026-12-04T10:00 (local) or 2026-12-04T10:00+00:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # naive: the local zone
    return int(moment.timestamp() * 1000)
