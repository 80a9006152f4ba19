"""A scripted exchange for unit tests: an httpx-style handler as the client's transport.

The handler gets an `httpx.Request` and returns an `httpx.Response`, or raises httpx's
transport errors to play a network fault; they come out as the production transport's
(exchange/http.py) `RequestNotSent` and `ResponseLost`.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from order_execution.exchange.http import HttpResponse, RequestNotSent, ResponseLost

Handler = Callable[[httpx.Request], httpx.Response]


class HandlerTransport:
    def __init__(
        self, handler: Handler, *, api_key: str = "k", base_url: str = "http://exchange.test"
    ) -> None:
        self._handler = handler
        self._headers = {"X-MBX-APIKEY": api_key}
        self._base_url = base_url

    async def send(self, method: str, path_and_query: str) -> HttpResponse:
        request = httpx.Request(method, self._base_url + path_and_query, headers=self._headers)
        try:
            response = self._handler(request)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise RequestNotSent(repr(exc)) from exc
        except httpx.TransportError as exc:
            raise ResponseLost(repr(exc)) from exc
        return HttpResponse(response.status_code, response.headers, response.text)

    async def close(self) -> None:
        pass
