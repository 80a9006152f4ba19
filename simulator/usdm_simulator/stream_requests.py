"""Control requests a client sends on a market-stream connection (Binance "live subscribing").

``{"method": "SUBSCRIBE"|"UNSUBSCRIBE", "params": [stream, …], "id": n}``,
``{"method": "LIST_SUBSCRIPTIONS", "id": n}``, ``{"method": "SET_PROPERTY", "params": ["combined", bool],
"id": n}`` and ``{"method": "GET_PROPERTY", "params": ["combined"], "id": n}``. Replies are
``{"result": …, "id": n}``; failures are ``{"error": {"code": c, "msg": m}, "id": n}`` with Binance's
documented codes and messages (0 unknown property, 1 value not a boolean, 2 invalid request, 3 invalid
JSON). The message for a stream name the simulator does not serve is the simulator's own (code 2).

Binance's per-connection limits (USD-M "Websocket Market Streams" page): at most 1024 streams — a
SUBSCRIBE that would go past it is refused whole with code 2 (``too_many_streams``; Binance documents the
limit, not the reply, so the wording is the simulator's) — and at most 10 incoming messages per second
(``MessageRate``; every frame the client sends counts: requests, pings, pongs) — past it the connection is
closed with 1008 "Too many requests".
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_EXPECTED = ", ".join(f"`{m}`" for m in METHODS)


class StreamRequestError(Exception):
    """A control request Binance would refuse: ``code`` and ``msg`` as sent back, ``request_id`` if known."""

    def __init__(self, code: int, msg: str, request_id: int | None = None) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.request_id = request_id

    def reply(self) -> dict[str, Any]:
        """The error frame sent to the client."""
        return {"error": {"code": self.code, "msg": self.msg}, "id": self.request_id}


def too_many_streams(limit: int, request_id: int | None) -> StreamRequestError:
    """Code 2 for a SUBSCRIBE that would leave the connection with more than ``limit`` streams."""
    return StreamRequestError(
        2, f"Invalid request: too many streams: a connection can listen to at most {limit}", request_id
    )


class MessageRate:
    """Incoming messages of one connection in a sliding one-second window (monotonic seconds)."""

    def __init__(self, per_second: int) -> None:
        self._per_second = per_second
        self._times: deque[float] = deque()

    def admit(self, now_s: float) -> bool:
        """Count a message arriving at ``now_s``; False once more than ``per_second`` arrived within 1 s."""
        while self._times and self._times[0] <= now_s - 1.0:
            self._times.popleft()
        self._times.append(now_s)
        return len(self._times) <= self._per_second


@dataclass(frozen=True)
class StreamRequest:
    """A well-formed control request: ``method`` one of METHODS, ``params`` checked for that method."""

    method: str
    params: list[Any]
    request_id: int

    def reply(self, result: Any) -> dict[str, Any]:
        """The success frame carrying ``result``."""
        return {"result": result, "id": self.request_id}


def parse_request(text: str) -> StreamRequest:
    """Parse and check one control frame; StreamRequestError with Binance's code and message if bad."""
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise StreamRequestError(3, f"Invalid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise StreamRequestError(2, "Invalid request: expected a JSON object")
    request_id = body.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, int) or request_id < 0:
        raise StreamRequestError(2, "Invalid request: request ID must be an unsigned integer")
    method = body.get("method")
    if method is None:
        raise StreamRequestError(2, "Invalid request: missing field `method`", request_id)
    if method not in METHODS:
        raise StreamRequestError(
            2, f"Invalid request: unknown variant `{method}`, expected one of {_EXPECTED}", request_id
        )
    params = body.get("params", [])
    if not isinstance(params, list):
        raise StreamRequestError(2, "Invalid request: params must be an array", request_id)
    _check_params(method, params, request_id)
    return StreamRequest(method, params, request_id)


def _check_params(method: str, params: list[Any], request_id: int) -> None:
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        if not all(isinstance(p, str) for p in params):
            raise StreamRequestError(2, "Invalid request: stream names must be strings", request_id)
        return
    if method == "LIST_SUBSCRIPTIONS":
        if params:
            raise StreamRequestError(2, "Invalid request: too many parameters", request_id)
        return
    wanted = 2 if method == "SET_PROPERTY" else 1
    if len(params) > wanted:
        raise StreamRequestError(2, "Invalid request: too many parameters", request_id)
    if not params or not isinstance(params[0], str):
        raise StreamRequestError(2, "Invalid request: property name must be a string", request_id)
    if params[0] != "combined":
        raise StreamRequestError(0, "Unknown property", request_id)
    if method == "SET_PROPERTY" and (len(params) < wanted or not isinstance(params[1], bool)):
        raise StreamRequestError(1, "Invalid value type: expected Boolean", request_id)
