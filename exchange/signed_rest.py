"""The signed REST hop to Binance USD-M Futures (`/fapi`), under every `BinanceClient` call.

`SignedRest._request` takes one request from start to finish. With a `RateBudget`, it
first acquires the request's cost (weight, orders) from the budget all replicas share,
waiting if it must (up to the request's deadline), and every answer corrects the budget
from its X-MBX-* headers; a 429 or 418 blocks every replica until the exchange will
listen again. With `Breakers`, order creates, cancels and queries each pass their
endpoint group's circuit breaker. The request is signed with a timestamp on the
exchange's clock (`clock_offset_ms`, which `BinanceClient.sync_clock` measures), sent over
the process's keep-alive HTTP transport (exchange/http.py), and its answer is classified
into the `exchange.errors` tree here and nowhere else.

An endpoint's cost, priority, breaker group and metric label are in the table of
exchange/endpoints.py: a new endpoint of the client gets its row there.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any

import redis.exceptions

from order_execution.exchange import endpoints
from order_execution.exchange import metrics as exchange_metrics
from order_execution.exchange.answers import ban_end_ms, classify, int_header, limits_whole_ip, retry_after_s
from order_execution.exchange.breakers import Breakers, Group
from order_execution.exchange.errors import BudgetExceeded, ExchangeUnavailable, OutcomeUnknown
from order_execution.exchange.http import HttpResponse, HttpTransport, RequestNotSent, ResponseLost
from order_execution.exchange.rate_budget import Cost, Priority, RateBudget
from order_execution.exchange.signing import signed_query
from order_execution.orders.model import DEFAULT_ACCOUNT, now_ms
from order_execution.runtime.logs import redact

_DEFAULT_MAX_WAIT_MS = 10_000


class SignedRest:
    """Signed requests over one HTTP transport; `BinanceClient` extends it with the endpoints."""

    def __init__(
        self,
        http: HttpTransport,
        *,
        secret_key: str,
        recv_window_ms: int,
        budget: RateBudget | None,
        breakers: Breakers | None,
        account: str = DEFAULT_ACCOUNT,
    ) -> None:
        """`account`: the exchange account whose key signs the requests; it labels their metrics."""
        self._secret = secret_key
        self.account = account
        self.budget = budget
        self.breakers = breakers
        self._recv_window = str(recv_window_ms)
        self.clock_offset_ms = 0
        self._http = http

    async def close(self) -> None:
        """Close the HTTP transport, then stop the breakers' Redis sync (sending their last writes)."""
        await self._http.close()
        if self.breakers is not None:
            await self.breakers.aclose()

    def exchange_now_ms(self) -> int:
        """Now on the exchange's clock, as far as we know it."""
        return now_ms() + self.clock_offset_ms

    async def _request(
        self,
        method: str,
        path: str,
        params: list[tuple[str, str]] | None = None,
        *,
        deadline_ms: int | None = None,
        after_wait: Callable[[], Awaitable[object]] | None = None,
    ) -> Any:
        """Spend the budget, sign (if `params` is given, with a fresh timestamp), send, classify.

        `after_wait` runs when the budget made the request wait, just before it is sent.
        """
        row = endpoints.lookup(method, path)
        # Without a deadline of its own a request waits for the budget at most this long, so a
        # cancel or a query never sleeps through a ban: it fails (NotExecuted) and is retried.
        waited = await self._spend(row.cost, row.priority, deadline_ms or now_ms() + _DEFAULT_MAX_WAIT_MS)
        if waited and after_wait is not None:
            await after_wait()
        url = path
        if params is not None:
            timestamp = str(self.exchange_now_ms())
            url += "?" + signed_query(
                [*params, ("recvWindow", self._recv_window), ("timestamp", timestamp)], self._secret
            )
        endpoint = exchange_metrics.endpoint_label(method, path)
        with self._guard(row.group):
            sent_at = self.exchange_now_ms()
            started = time.perf_counter()
            try:
                response = await self._send(method, url)
            finally:
                exchange_metrics.record_sent(endpoint, time.perf_counter() - started, self.account)
            await self._learn(response, sent_at)
            if response.status == 200:
                return response.json()
            error = classify(response)
            exchange_metrics.record_answer_error(endpoint, error, self.account)
            raise error

    def _guard(self, group: Group | None) -> AbstractContextManager[None]:
        if self.breakers is None or group is None:
            return contextlib.nullcontext()
        return self.breakers.guard(group)

    async def _spend(self, cost: Cost, priority: Priority, deadline_ms: int) -> bool:
        """Wait until the shared budget grants `cost`; True if that took a wait.

        Raises BudgetExceeded, having waited for nothing, if the grant would come past the deadline.
        """
        if self.budget is None:
            return False
        waited = False
        while True:
            try:
                grant = await self.budget.acquire(cost, priority, at_ms=self.exchange_now_ms())
            except redis.exceptions.RedisError as exc:
                raise ExchangeUnavailable(f"the shared rate budget (Redis) is unreachable: {exc!r}") from exc
            if not grant.wait_ms:
                return waited
            if now_ms() + grant.wait_ms > deadline_ms:
                exchange_metrics.record_budget("budget_exceeded", self.account)
                raise BudgetExceeded(
                    f"the rate budget ({grant.limited_by}) would hold it {grant.wait_ms} ms, too long",
                    wait_ms=grant.wait_ms,
                )
            if not waited:
                exchange_metrics.record_budget("budget_wait", self.account)
            waited = True
            await asyncio.sleep(grant.wait_ms / 1000)

    async def _send(self, method: str, url: str) -> HttpResponse:
        read_only = method == "GET"  # a GET executes nothing, so its failure is not ambiguous
        path = url.split("?")[0]
        endpoint = exchange_metrics.endpoint_label(method, path)
        # The transport's text may quote the signed URL; these messages reach logs and orders' reasons.
        try:
            return await self._http.send(method, url)
        except RequestNotSent as exc:
            exchange_metrics.record_error(endpoint, exchange_metrics.NOT_SENT, self.account)
            raise ExchangeUnavailable(f"could not reach the exchange: {redact(str(exc))}") from exc
        except ResponseLost as exc:
            exchange_metrics.record_error(endpoint, exchange_metrics.NO_ANSWER, self.account)
            if read_only:
                raise ExchangeUnavailable(f"{method} {path} failed: {redact(str(exc))}") from exc
            raise OutcomeUnknown(f"no answer to {method} {path}: {redact(str(exc))}") from exc

    async def _learn(self, response: HttpResponse, sent_at_ms: int) -> None:
        """Correct the shared budget from the answer's headers; block everyone on 429 and 418."""
        if self.budget is None:
            return
        headers = response.headers
        try:
            await self.budget.correct(
                weight_1m=int_header(headers, "x-mbx-used-weight-1m"),
                orders_10s=int_header(headers, "x-mbx-order-count-10s"),
                orders_1m=int_header(headers, "x-mbx-order-count-1m"),
                at_ms=sent_at_ms,
                answered_ms=self.exchange_now_ms(),
            )
            if response.status == 429:
                until = self.exchange_now_ms() + int(retry_after_s(response) * 1000)
                await self.budget.block(
                    until, "429: request rate over the exchange's limit", whole_ip=limits_whole_ip(response)
                )
            elif response.status == 418:
                until = ban_end_ms(response, self.exchange_now_ms())
                await self.budget.block(until, f"418: IP banned by the exchange until {until}", whole_ip=True)
        except redis.exceptions.RedisError:
            pass  # the answer itself still counts; the next one corrects the budget
