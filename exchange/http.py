"""The HTTP hop to the exchange: one keep-alive aiohttp session per process.

aiohttp rather than httpx because the hop is on every order's path: against the
simulator on this 2-core machine a request costs about 0.2 ms of CPU with aiohttp and
1 to 2 ms with httpx (httpcore's pool bookkeeping, anyio's stream wrappers, and a
failed `import sniffio` on every request), which made httpx half of a worker's CPU.

Failures come out as two exceptions, because what the client may conclude differs:
`RequestNotSent` (connection refused, no connection within the connect timeout: the
exchange got nothing) and `ResponseLost` (the request may have been written: a timeout
after connecting, a dropped connection).

Redirects are never followed: the session sends `X-MBX-APIKEY` with every request, and a
redirect would carry it to whatever server the answer names. A 3xx answer raises
`Redirected` (a `RequestNotSent`: the exchange executed nothing; a redirect means the base
URL is wrong).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson
from yarl import URL


class RequestNotSent(Exception):
    """Nothing reached the exchange."""


class ResponseLost(Exception):
    """The request may have reached the exchange, but no answer came back."""


class Redirected(RequestNotSent):
    """The base URL answered with a redirect, which is not followed (it would carry the API key
    elsewhere); nothing was executed."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]  # case-insensitive
    text: str

    def json(self) -> Any:
        return orjson.loads(self.text)


class HttpTransport(Protocol):
    """Sends one request to the exchange (`path_and_query` is relative to its base URL)."""

    async def send(self, method: str, path_and_query: str) -> HttpResponse: ...

    async def close(self) -> None: ...


class AiohttpTransport:
    """Keep-alive connections to `base_url`, at most `max_connections` at once."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str],
        timeout_s: float,
        max_connections: int = 64,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._headers = dict(headers)
        # Waiting for a pooled connection counts as connecting: if none comes, nothing was sent.
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=timeout_s)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the event loop it was made on.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                self._base_url,
                headers=self._headers,
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def send(self, method: str, path_and_query: str) -> HttpResponse:
        try:
            # encoded=True: the query is already signed; re-encoding it would break the signature.
            url = URL(path_and_query, encoded=True)
            async with self._open().request(method, url, allow_redirects=False) as response:
                if 300 <= response.status < 400:
                    raise Redirected(
                        f"{method} {url.path} answered HTTP {response.status} (a redirect to "
                        f"{_where(response.headers.get('Location', ''))}); redirects are not followed, "
                        "they would carry the API key to another server: check exchange.base_url"
                    )
                text = await response.text()
                return HttpResponse(response.status, response.headers, text)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise RequestNotSent(repr(exc)) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ResponseLost(repr(exc)) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _where(location: str) -> str:
    """The scheme and host a redirect points to (its path and query left out: they may hold anything)."""
    try:
        target = URL(location)
    except ValueError:
        return "an unparsable Location"
    return f"{target.scheme}://{target.host}" if target.is_absolute() else "a path on the same server"
