"""Who is calling: API keys in gRPC metadata, checked against the hashed keys in the settings.

A client sends its key as metadata `x-api-key`. The settings hold only each key's
SHA-256 (`auth.clients[].key_sha256`): keys are high-entropy random strings, so a plain
hash is enough and a leaked settings file does not leak a key. The presented key's
hash is compared with every configured hash in constant time, so timing says nothing
about how close a guess came. A missing key and a wrong key get the same answer.

A refusal is counted, logged at a bounded rate and answered late (`gateway.auth_failures`).

With `auth.enabled: false` there is no caller (None): no scoping, every caller sees
every order; meant for local tests only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NoReturn

from order_execution.gateway.auth_failures import AuthFailures
from order_execution.orders.errors import OrderServiceError
from order_execution.runtime.settings import AuthSettings

log = logging.getLogger(__name__)

API_KEY_HEADER = "x-api-key"
_MAX_KEY_CHARS = 256
_REFUSED = f"missing or invalid API key (send it as gRPC metadata {API_KEY_HEADER!r})"


class Unauthenticated(OrderServiceError):
    """No valid API key came with the call."""


class PermissionDenied(OrderServiceError):
    """The caller's key is valid, but it may not do this (e.g. trade this symbol)."""


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated client: it owns the orders it places and sees only those."""

    name: str
    allowed_symbols: frozenset[str] = frozenset()
    requests_per_second: float | None = None
    burst: int | None = None
    admin: bool = False
    # The exchange accounts it may trade and see, in configured order (empty: every account),
    # and the one a request naming none goes to ("" : its first, else the first configured).
    accounts: tuple[str, ...] = ()
    default_account: str = ""

    def may_trade(self, account: str) -> bool:
        """Whether this client may trade, and see the orders of, exchange account `account`."""
        return not self.accounts or account in self.accounts

    def check_account(self, account: str) -> None:
        """Raise PermissionDenied naming `account` if this client may not trade it."""
        if not self.may_trade(account):
            raise PermissionDenied(
                f"account: client {self.name} may not trade account {account!r}; "
                f"its accounts: {', '.join(self.accounts)}"
            )

    def check_admin(self) -> None:
        """Raise PermissionDenied unless this client has the admin role (`auth.clients[].admin`)."""
        if not self.admin:
            raise PermissionDenied(f"admin: client {self.name} has no admin role (auth.clients[].admin)")

    def check_symbol(self, symbol: str) -> None:
        """Raise PermissionDenied naming `symbol` if this client may not trade it (empty set: any)."""
        if self.allowed_symbols and symbol not in self.allowed_symbols:
            raise PermissionDenied(
                f"symbol: client {self.name} may not trade {symbol} "
                f"(allowed: {', '.join(sorted(self.allowed_symbols))})"
            )


class Authenticator:
    """Maps a call's metadata to its Caller, per `auth` settings."""

    def __init__(self, settings: AuthSettings, *, failures: AuthFailures | None = None) -> None:
        self.enabled = settings.enabled
        self.failures = failures or AuthFailures(
            delay_ms=settings.failure_delay_ms, max_delayed=settings.max_delayed_failures
        )
        self._clients = [
            (
                bytes.fromhex(c.key_sha256),
                Caller(
                    c.name,
                    frozenset(c.allowed_symbols),
                    c.requests_per_second,
                    c.burst,
                    c.admin,
                    tuple(c.accounts),
                    c.default_account,
                ),
            )
            for c in settings.clients
        ]
        if self.enabled and not self._clients:
            log.warning(
                "auth.enabled is true but auth.clients is empty: every OrderService call will be refused "
                "(add a client, see README 'Security', or set auth.enabled: false for local tests)"
            )

    def identify(self, metadata: Iterable[tuple[str, str | bytes]] | None, peer: str = "") -> Caller | None:
        """The caller whose key is in `metadata`; None when auth is off.

        Raises Unauthenticated, with the same message whether the key is missing or wrong,
        after counting and logging the refusal (`peer`, the caller's address, goes in the log).
        """
        if not self.enabled:
            return None
        key = _api_key(metadata or ())
        if not key:
            self._refuse("missing_key", peer)
        if len(key) > _MAX_KEY_CHARS:
            self._refuse("invalid_key", peer)
        digest = hashlib.sha256(key.encode()).digest()
        found: Caller | None = None
        for expected, caller in self._clients:  # no early exit: every key costs the same
            if hmac.compare_digest(digest, expected):
                found = caller
        if found is None:
            self._refuse("invalid_key", peer)
        return found

    async def authenticate(
        self, metadata: Iterable[tuple[str, str | bytes]] | None, peer: str = ""
    ) -> Caller | None:
        """`identify`, with a refusal answered only after `auth.failure_delay_ms` (see
        `gateway.auth_failures`): raises Unauthenticated then."""
        try:
            return self.identify(metadata, peer)
        except Unauthenticated:
            await self.failures.delay()
            raise

    async def authenticate_admin(
        self, metadata: Iterable[tuple[str, str | bytes]] | None, peer: str = ""
    ) -> str:
        """The calling admin's name ("anonymous" with auth off), for AdminService and
        AccountService; raises Unauthenticated (answered late, as `authenticate`) or
        PermissionDenied for a client without the admin role."""
        caller = await self.authenticate_admin_caller(metadata, peer)
        return caller.name if caller is not None else "anonymous"

    async def authenticate_admin_caller(
        self, metadata: Iterable[tuple[str, str | bytes]] | None, peer: str = ""
    ) -> Caller | None:
        """The calling admin (None with auth off), for calls that also check its accounts;
        raises as `authenticate_admin`."""
        caller = await self.authenticate(metadata, peer)
        if caller is not None:
            caller.check_admin()
        return caller

    def _refuse(self, reason: str, peer: str) -> NoReturn:
        self.failures.record(reason, peer)
        raise Unauthenticated(_REFUSED)


def _api_key(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    for name, value in metadata:
        if name == API_KEY_HEADER:
            return value.decode(errors="replace") if isinstance(value, bytes) else value
    return ""
