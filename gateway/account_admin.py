"""AccountService over gRPC (proto/admin.proto): leverage, margin type and position mode at the exchange.

Each call is for one exchange account: the request's `account`, empty = the first configured
(`accounts:`). One not configured is INVALID_ARGUMENT (field `account`, listing the configured
ones); one the admin client may not trade (`auth.clients[].accounts`) PERMISSION_DENIED naming it.

The gateway calls the exchange directly here (no queue: these are rare operator actions, and
idempotent), with the clients the workers use (`exchange.account.exchange_clients`, built once
at start): each account's shared rate budget and its venue's circuit breakers.
GetAccountSettings' reads go through the query breaker (`binance_query_order`), so one the
workers opened refuses them without calling the exchange, and their faults count toward it;
leverage and margin type pass no breaker (exchange/endpoints.py). Admin clients only, as
AdminService (`auth.clients[].admin`). Errors leave through the gateway's one map
(gateway/status_mapping.py): the exchange refusing (OrderRejected) is FAILED_PRECONDITION with
Binance's code and message, an exchange, breaker or budget that cannot take the call
(NotExecuted, OutcomeUnknown) is UNAVAILABLE; bad input is INVALID_ARGUMENT."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any, TypeVar

import redis.asyncio as aioredis

from order_execution.exchange.account import exchange_clients
from order_execution.exchange.client import BinanceClient
from order_execution.exchange.errors import OrderRejected
from order_execution.gateway.accounts import TradingAccounts
from order_execution.gateway.auth import Authenticator
from order_execution.gateway.status_mapping import Context, answer
from order_execution.orders.errors import InvalidOrder
from order_execution.proto import admin_pb2 as apb
from order_execution.proto import admin_pb2_grpc
from order_execution.runtime.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
_NO_CHANGE_MARGIN_TYPE = -4046  # "No need to change margin type."
_MAX_LEVERAGE = 125
_MARGIN_TYPES = {apb.CROSSED: "CROSSED", apb.ISOLATED: "ISOLATED"}
_MARGIN_FROM_RISK: dict[str, apb.MarginType.ValueType] = {
    "cross": apb.CROSSED,
    "crossed": apb.CROSSED,
    "isolated": apb.ISOLATED,
}


class AccountServicer(admin_pb2_grpc.AccountServiceServicer):
    """The AccountService methods; `auth` None means authentication is off (tests, local runs)."""

    def __init__(
        self, settings: Settings, exchanges: Mapping[str, BinanceClient], auth: Authenticator | None
    ) -> None:
        """`exchanges`: each configured account's client, by account name."""
        self._settings = settings
        self._exchanges = dict(exchanges)
        self._accounts = TradingAccounts(tuple(settings.account_names))
        self._auth = auth

    @classmethod
    def from_settings(
        cls, settings: Settings, redis_client: aioredis.Redis, auth: Authenticator | None
    ) -> AccountServicer:
        """The service on the exchange clients the workers use: each account's rate budget and
        its venue's breakers shared through `redis_client`. `aclose` closes those clients.

        Their breakers sync around each call instead of four times a second in the background:
        these calls are rare, and the gateway would otherwise pay a Redis round trip every
        250 ms for them (measured: +0.3 % of a core idle)."""
        return cls(settings, exchange_clients(redis_client, settings, breakers_in_background=False), auth)

    async def aclose(self) -> None:
        """Close the exchange clients (their breakers send their last writes to Redis)."""
        for client in self._exchanges.values():
            await client.close()

    async def _admin(self, context: Context, requested: str) -> tuple[str, str]:
        """The calling admin's name ("anonymous" with auth off; see
        `Authenticator.authenticate_admin`) and the account the call is for: `requested`, else
        the first configured. Raises InvalidOrder for an account not configured,
        PermissionDenied for one the admin client may not trade."""
        caller = None
        if self._auth is not None:
            caller = await self._auth.authenticate_admin_caller(
                context.invocation_metadata(), peer=context.peer()
            )
        account = requested or self._accounts.names[0]
        self._accounts.check(account, caller)
        return (caller.name if caller is not None else "anonymous"), account

    def _symbol(self, symbol: str) -> str:
        if symbol not in self._settings.symbols:
            raise InvalidOrder("symbol", f"must be one of the traded symbols {self._settings.symbols}")
        return symbol

    async def _exchange_call(
        self, context: Context, account: str, call: Callable[[BinanceClient], Awaitable[T]]
    ) -> T:
        """Run `call` on `account`'s exchange client, its clock synced first (these calls are rare
        and the clock may have drifted since the last); its errors leave through `answer`."""
        exchange = self._exchanges[account]
        breakers = exchange.breakers

        async def on_exchange() -> T:
            if breakers is not None:
                await breakers.try_sync()  # the shared state as of now
            try:
                await exchange.sync_clock(samples=3)
                return await call(exchange)
            finally:
                if breakers is not None:
                    await breakers.try_sync()  # and this call's outcome out to the others

        return await answer(context, on_exchange)

    async def SetLeverage(self, request: apb.SetLeverageRequest, context: Context) -> apb.SetLeverageResponse:
        async def checked() -> tuple[str, str, str]:
            actor, account = await self._admin(context, request.account)
            if not 1 <= request.leverage <= _MAX_LEVERAGE:
                raise InvalidOrder("leverage", f"must be 1-{_MAX_LEVERAGE}, got {request.leverage}")
            return actor, account, self._symbol(request.symbol)

        actor, account, symbol = await answer(context, checked)
        reply = await self._exchange_call(
            context, account, lambda c: c.set_leverage(symbol, request.leverage)
        )
        log.warning("leverage of %s on account %s set to %d by %s", symbol, account, request.leverage, actor)
        return apb.SetLeverageResponse(
            symbol=symbol,
            leverage=int(reply["leverage"]),
            max_notional=str(Decimal(str(reply["maxNotionalValue"]))),
        )

    async def SetMarginType(
        self, request: apb.SetMarginTypeRequest, context: Context
    ) -> apb.SetMarginTypeResponse:
        async def checked() -> tuple[str, str, str]:
            actor, account = await self._admin(context, request.account)
            if request.margin_type not in _MARGIN_TYPES:
                raise InvalidOrder("margin_type", "must be CROSSED or ISOLATED")
            return actor, account, self._symbol(request.symbol)

        actor, account, symbol = await answer(context, checked)
        margin_type = _MARGIN_TYPES[request.margin_type]

        async def change(client: BinanceClient) -> bool:
            try:
                await client.set_margin_type(symbol, margin_type)
            except OrderRejected as exc:
                if exc.code == _NO_CHANGE_MARGIN_TYPE:
                    return False
                raise
            return True

        changed = await self._exchange_call(context, account, change)
        if changed:
            log.warning(
                "margin type of %s on account %s set to %s by %s", symbol, account, margin_type, actor
            )
        return apb.SetMarginTypeResponse(symbol=symbol, margin_type=request.margin_type, changed=changed)

    async def GetAccountSettings(
        self, request: apb.GetAccountSettingsRequest, context: Context
    ) -> apb.AccountSettings:
        async def checked() -> tuple[str, list[str]]:
            _, account = await self._admin(context, request.account)
            return account, [self._symbol(s) for s in request.symbols] or list(self._settings.symbols)

        account, symbols = await answer(context, checked)

        async def read(client: BinanceClient) -> tuple[str, list[dict[str, Any]]]:
            return await client.position_mode(), await client.position_risk()

        mode, rows = await self._exchange_call(context, account, read)
        return settings_to_pb(mode, rows, symbols, account=account)


def settings_to_pb(
    mode: str, risk_rows: list[dict[str, Any]], symbols: list[str], *, account: str
) -> apb.AccountSettings:
    """`account`'s AccountSettings from the position mode and positionRisk rows (first row per
    symbol), in `symbols` order; a symbol the exchange did not list is left out."""
    first: dict[str, dict[str, Any]] = {}
    for row in risk_rows:
        first.setdefault(str(row["symbol"]), row)
    return apb.AccountSettings(
        account=account,
        position_mode=apb.HEDGE if mode == "hedge" else apb.ONE_WAY,
        symbols=[
            apb.SymbolSettings(
                symbol=symbol,
                leverage=int(first[symbol]["leverage"]),
                margin_type=_MARGIN_FROM_RISK.get(
                    str(first[symbol]["marginType"]).lower(), apb.MARGIN_TYPE_UNSPECIFIED
                ),
                max_notional=str(first[symbol].get("maxNotionalValue", "")),
            )
            for symbol in symbols
            if symbol in first
        ],
    )
