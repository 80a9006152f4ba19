"""Binance error model: one exception type and the catalogue of codes with their exact messages.

Every rejection the simulator produces is a :class:`BinanceError`; the HTTP layer renders it as
``{"code": <code>, "msg": <msg>}`` with its HTTP status, exactly as Binance USD-M Futures does.
Messages are taken from Binance's published error-code page (see the project's reference notes).
"""

from __future__ import annotations

from typing import Final


class BinanceError(Exception):
    """A Binance error reply: negative ``code``, human ``msg`` and the HTTP status to send."""

    def __init__(self, code: int, msg: str, http_status: int = 400, retry_after_s: int | None = None) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.http_status = http_status
        self.retry_after_s = retry_after_s

    def body(self) -> dict[str, object]:
        """Return the JSON body Binance sends for this error."""
        return {"code": self.code, "msg": self.msg}


UNKNOWN: Final = -1000
DISCONNECTED: Final = -1001
TOO_MANY_REQUESTS: Final = -1003
TIMEOUT: Final = -1007
THROTTLED: Final = -1008
TOO_MANY_ORDERS: Final = -1015
INVALID_TIMESTAMP: Final = -1021
INVALID_SIGNATURE: Final = -1022
ILLEGAL_CHARS: Final = -1100
MANDATORY_PARAM: Final = -1102
PARAM_NOT_REQUIRED: Final = -1106
BAD_PRECISION: Final = -1111
INVALID_TIF: Final = -1115
INVALID_ORDER_TYPE: Final = -1116
INVALID_SIDE: Final = -1117
BAD_SYMBOL: Final = -1121
INVALID_LISTEN_KEY: Final = -1125
INVALID_PARAMETER: Final = -1130
CANCEL_REJECTED: Final = -2011
NO_SUCH_ORDER: Final = -2013
BAD_API_KEY_FMT: Final = -2014
REJECTED_MBX_KEY: Final = -2015
MARGIN_NOT_SUFFICIENT: Final = -2019
ORDER_WOULD_TRIGGER: Final = -2021
REDUCE_ONLY_REJECT: Final = -2022
MAX_OPEN_ORDERS: Final = -2025
MAX_LEVERAGE_RATIO: Final = -2027
PRICE_LESS_THAN_ZERO: Final = -4001
PRICE_GREATER_THAN_MAX: Final = -4002
QTY_LESS_THAN_ZERO: Final = -4003
QTY_LESS_THAN_MIN: Final = -4004
QTY_GREATER_THAN_MAX: Final = -4005
PRICE_LESS_THAN_MIN: Final = -4013
PRICE_NOT_ON_TICK: Final = -4014
INVALID_CL_ORD_ID: Final = -4015
PRICE_ABOVE_CAP: Final = -4016
QTY_NOT_ON_STEP: Final = -4023
PRICE_BELOW_FLOOR: Final = -4024
INVALID_LEVERAGE: Final = -4028
NO_NEED_TO_CHANGE_MARGIN_TYPE: Final = -4046
MARGIN_TYPE_OPEN_ORDERS: Final = -4047
MARGIN_TYPE_POSITION: Final = -4048
NO_NEED_TO_CHANGE_POSITION_SIDE: Final = -4059
POSITION_SIDE_NOT_MATCH: Final = -4061
POSITION_SIDE_OPEN_ORDERS: Final = -4067
POSITION_SIDE_POSITION: Final = -4068
DUPLICATED_CLIENT_ORDER_ID: Final = -4116
STOP_ORDER_SWITCH_ALGO: Final = -4120
MIN_NOTIONAL: Final = -4164
FOK_REJECT: Final = -5021
GTX_REJECT: Final = -5022
AMEND_NO_CHANGE: Final = -5027
GOOD_TILL_DATE: Final = -5040

_MESSAGES: Final[dict[int, str]] = {
    UNKNOWN: "An unknown error occured while processing the request.",
    DISCONNECTED: "Internal error; unable to process your request. Please try again.",
    TIMEOUT: (
        "Timeout waiting for response from backend server. Send status unknown; execution status unknown."
    ),
    THROTTLED: (
        "Request throttled by system-level protection. Reduce-only/close-position orders are exempt. "
        "Please try again."
    ),
    INVALID_SIGNATURE: "Signature for this request is not valid.",
    BAD_PRECISION: "Precision is over the maximum defined for this asset.",
    INVALID_TIF: "Invalid timeInForce.",
    INVALID_ORDER_TYPE: "Invalid orderType.",
    INVALID_SIDE: "Invalid side.",
    BAD_SYMBOL: "Invalid symbol.",
    INVALID_LISTEN_KEY: (
        "This listenKey does not exist. Please use `POST /fapi/v1/listenKey` to recreate `listenKey`"
    ),
    CANCEL_REJECTED: "Unknown order sent.",
    NO_SUCH_ORDER: "Order does not exist.",
    BAD_API_KEY_FMT: "API-key format invalid.",
    REJECTED_MBX_KEY: "Invalid API-key, IP, or permissions for action.",
    MARGIN_NOT_SUFFICIENT: "Margin is insufficient.",
    ORDER_WOULD_TRIGGER: "Order would immediately trigger.",
    REDUCE_ONLY_REJECT: "ReduceOnly Order is rejected.",
    MAX_OPEN_ORDERS: "Reach max open order limit.",
    PRICE_LESS_THAN_ZERO: "Price less than 0.",
    PRICE_GREATER_THAN_MAX: "Price greater than max price.",
    QTY_LESS_THAN_ZERO: "Quantity less than zero.",
    QTY_LESS_THAN_MIN: "Quantity less than min quantity.",
    QTY_GREATER_THAN_MAX: "Quantity greater than max quantity.",
    PRICE_LESS_THAN_MIN: "Price less than min price.",
    PRICE_NOT_ON_TICK: "Price not increased by tick size.",
    INVALID_CL_ORD_ID: "Client order id length should not be more than 36 chars",
    PRICE_ABOVE_CAP: "Price is higher than mark price multiplier cap.",
    QTY_NOT_ON_STEP: "Qty not increased by step size.",
    PRICE_BELOW_FLOOR: "Price is lower than mark price multiplier floor.",
    POSITION_SIDE_NOT_MATCH: "Order's position side does not match user's setting.",
    NO_NEED_TO_CHANGE_MARGIN_TYPE: "No need to change margin type.",
    MARGIN_TYPE_OPEN_ORDERS: "Margin type cannot be changed if there exists open orders.",
    MARGIN_TYPE_POSITION: "Margin type cannot be changed if there exists position.",
    NO_NEED_TO_CHANGE_POSITION_SIDE: "No need to change position side.",
    POSITION_SIDE_OPEN_ORDERS: "Position side cannot be changed if there exists open orders.",
    POSITION_SIDE_POSITION: "Position side cannot be changed if there exists position.",
    MAX_LEVERAGE_RATIO: "Exceeded the maximum allowable position at current leverage.",
    DUPLICATED_CLIENT_ORDER_ID: "ClientOrderId is duplicated.",
    STOP_ORDER_SWITCH_ALGO: (
        "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead."
    ),
    FOK_REJECT: (
        "Due to the order could not be filled immediately, the FOK order has been rejected. "
        "The order will not be recorded in the order history"
    ),
    GTX_REJECT: (
        "Due to the order could not be executed as maker, the Post Only order will be rejected. "
        "The order will not be recorded in the order history"
    ),
    AMEND_NO_CHANGE: "No need to modify the order.",
    GOOD_TILL_DATE: (
        "The goodTillDate timestamp must be greater than the current time plus 600 seconds and smaller "
        "than 253402300799000 (UTC 9999-12-31 23:59:59)"
    ),
}

UNKNOWN_ERROR_503_MSG: Final = "Unknown error, please check your request or try again later."
TIMESTAMP_OUTSIDE_WINDOW_MSG: Final = "Timestamp for this request is outside of the recvWindow."
TIMESTAMP_AHEAD_MSG: Final = "Timestamp for this request was 1000ms ahead of the server's time."
CANCEL_ALL_DONE_MSG: Final = "The operation of cancel all open order is done."
DECIMAL_LEGAL_RANGE: Final = "^([0-9]{1,20})(\\.[0-9]{1,20})?$"
CLIENT_ID_LEGAL_RANGE: Final = "^[\\.A-Z\\:/a-z0-9_-]{1,36}$"


def error(code: int, http_status: int = 400) -> BinanceError:
    """Return the catalogued error for ``code`` (KeyError if the code has no fixed message)."""
    return BinanceError(code, _MESSAGES[code], http_status)


def mandatory(param: str) -> BinanceError:
    """-1102 for a mandatory parameter that is missing, empty or malformed."""
    return BinanceError(
        MANDATORY_PARAM, f"Mandatory parameter '{param}' was not sent, was empty/null, or malformed."
    )


def not_required(param: str) -> BinanceError:
    """-1106 for a parameter sent where it is not allowed."""
    return BinanceError(PARAM_NOT_REQUIRED, f"Parameter '{param}' sent when not required.")


def illegal_chars(param: str, legal_range: str) -> BinanceError:
    """-1100 for a parameter whose characters fall outside the legal range."""
    return BinanceError(
        ILLEGAL_CHARS, f"Illegal characters found in parameter '{param}'; legal range is '{legal_range}'."
    )


def invalid_parameter(param: str) -> BinanceError:
    """-1130 for a parameter whose value is not valid."""
    return BinanceError(INVALID_PARAMETER, f"Data sent for parameter '{param}' is not valid.")


def invalid_leverage(leverage: str) -> BinanceError:
    """-4028 for a leverage outside 1..125 (or above the symbol's first bracket)."""
    return BinanceError(INVALID_LEVERAGE, f"Leverage {leverage} is not valid")


def min_notional(notional: str) -> BinanceError:
    """-4164 for an order below the symbol's MIN_NOTIONAL (reduce-only orders are exempt)."""
    return BinanceError(
        MIN_NOTIONAL, f"Order's notional must be no smaller than {notional} (unless you choose reduce only)"
    )


def timestamp_outside_window() -> BinanceError:
    """-1021 for a timestamp older than ``recvWindow`` milliseconds."""
    return BinanceError(INVALID_TIMESTAMP, TIMESTAMP_OUTSIDE_WINDOW_MSG)


def timestamp_ahead() -> BinanceError:
    """-1021 for a timestamp 1000 ms or more ahead of the server clock."""
    return BinanceError(INVALID_TIMESTAMP, TIMESTAMP_AHEAD_MSG)


def too_many_requests(limit: int) -> BinanceError:
    """-1003 with HTTP 429 when the IP's request weight per minute is exhausted."""
    return BinanceError(
        TOO_MANY_REQUESTS,
        f"Too many requests; current limit is {limit} requests per minute. Please use the websocket for "
        "live updates to avoid polling the API.",
        429,
    )


def ip_banned(until_ms: int) -> BinanceError:
    """-1003 with HTTP 418 for an IP banned after continuing to send past a 429."""
    return BinanceError(
        TOO_MANY_REQUESTS,
        f"Way too many requests; IP banned until {until_ms}. Please use the websocket for live updates "
        "to avoid bans.",
        418,
    )


def too_many_orders(limit: int, interval: str) -> BinanceError:
    """-1015 with HTTP 429 when the account's order count for ``interval`` is exhausted."""
    return BinanceError(
        TOO_MANY_ORDERS, f"Too many new orders; current limit is {limit} orders per {interval}.", 429
    )
