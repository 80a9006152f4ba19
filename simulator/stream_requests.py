"""Control requests a client sends on a market-stream connection (Binance "live subscribing").

``{"method": "SUBSCRIBE"|"UNSUBSCRIBE", "params": [stream, …], "id": n}``,
``{"method": "LIST_SUBSCRIPTIONS", "id": n}``, ``{"method": "SET_PROPERTY", "params": ["combined", bool],
"id": n}`` and ``{"method": "GET_PROPERTY", "params": ["combined"], "id": n}``. Replies are
``{"result": …, "id": n}``; failures are ``{"error": {"code": c, "msg": m}, "id": n}`` with Binance's
documented codes and messages (0 unknown property, 1 value not a boolean, 2 invalid request, 3 invalid
JSON). The message for a stream name the simulator does not serve is the simulator's own (code 2).
"""

from __future__ import annotations

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
