"""Which database of the machine's Redis (127.0.0.1:6379, dbs 0-15) each test module uses.

The one place they are allocated: a module that uses the real Redis takes its database with
`redis_db(__name__)`, and `tests/unit/test_redis_dbs.py` checks the table (no two dedicated
modules share a database, none takes the benches' or db 0, every module that asks for the
real Redis is listed).

Two kinds of module:

* **Dedicated** — the module flushes its database (a `local_stack` flushes it at start, some
  fixtures flush before and after) or relies on keys with fixed names (`oe:order:…`, the
  heartbeats set), so it must be alone in it.
* **Namespaced** — every key the module writes carries a prefix unique to the test run
  (`test-<uuid>` namespaces, `consumer-test-<uuid>` queues), it deletes only those keys
  afterwards and never flushes; such modules cannot see or remove each other's keys, so they
  share `NAMESPACED_DB`. Sixteen databases do not leave one per module: this is how they fit.

Not for tests: db 0 (`up`'s default, so a developer's own orders) and the benches' database
(`bench.redis_db.BENCH_REDIS_DB`, which the benches flush). The table is full (2-15): a new
module that uses the real Redis namespaces its keys and joins `NAMESPACED`, or shares a stack.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from bench.redis_db import BENCH_REDIS_DB

USER_DB = 0  # `up` on a Redis that was already running uses db 0 unless told otherwise
NAMESPACED_DB = 14

DEDICATED: dict[str, int] = {
    "tests.integration.test_kill_switch_recovery": 2,
    "tests.integration.test_dead_man_and_hedge": 3,
    "tests.integration.test_risk_and_kill_switch": 4,
    "tests.integration.test_order_kinds": 5,
    "tests.integration.test_auth": 6,
    "tests.integration.test_dashboard": 7,
    "tests.integration.test_cli_and_shutdown": 8,
    "tests.integration.test_rate_limits": 9,
    "tests.integration.test_listener_failover": 10,
    "tests.integration.test_outages": 11,
    "tests.integration.test_observability": 12,
    # The session-wide stack (`service`) that test_order_path, test_order_truth, test_surfaces use.
    "tests.integration.conftest": 13,
    "tests.unit.test_store": 15,  # the store's keys have fixed names: flushed before and after
}

NAMESPACED: frozenset[str] = frozenset(
    {
        "tests.unit.test_breakers",  # breaker keys under a `test-<uuid>` namespace
        "tests.unit.test_rate_budget",  # budget keys under a `test-<uuid>` namespace
        "tests.unit.test_consumer",  # queues and worker ids under a `consumer-test-<uuid>` prefix
        "tests.integration.test_queue_and_bus",  # one queue named for a fresh symbol, its worker id
        "tests.integration.test_bounded_reads",  # 100,000 orders under a `test-<uuid>` store namespace
        "tests.unit.test_redis_command_timeouts",  # one key named for the moment, deleted after
    }
)

RESERVED = {USER_DB: "`up`'s default (a developer's own orders)", BENCH_REDIS_DB: "the benches' (flushed)"}


def redis_db(module: str) -> int:
    """The database test module `module` (its `__name__`) uses on the machine's Redis.

    Raises KeyError naming the module and this file when the module has no entry: a module
    using the real Redis must be allocated here, not pick a number of its own.
    """
    if module in DEDICATED:
        return DEDICATED[module]
    if module in NAMESPACED:
        return NAMESPACED_DB
    raise KeyError(f"{module} has no Redis database: allocate one in tests/redis_dbs.py")


async def delete_keys_under(client: aioredis.Redis, prefix: str) -> int:
    """Delete every key of `client`'s database that starts with `prefix` (how a namespaced
    module cleans up, instead of a flush); returns how many were deleted."""
    deleted = 0
    async for key in client.scan_iter(match=f"{prefix}*", count=500):
        deleted += int(await client.delete(key))
    return deleted
