"""The table of Redis databases in tests/redis_dbs.py: one module per dedicated database,
none taken from the benches or `up`, and every module that uses the real Redis listed."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from bench.redis_db import BENCH_REDIS_DB
from tests import redis_dbs
from tests.redis_dbs import DEDICATED, NAMESPACED, NAMESPACED_DB, RESERVED, USER_DB, redis_db

TESTS = Path(__file__).resolve().parents[1]
REDIS_DATABASES = range(16)  # a default Redis has dbs 0-15


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(TESTS.parent).with_suffix("").parts)


def modules_using_the_real_redis() -> set[str]:
    """Test modules whose source asks for the `real_redis` fixture: as an argument, or by name to
    `request.getfixturevalue` (tests/conftest.py, which defines it, aside)."""
    asks = re.compile(r"\breal_redis\s*:\s*str\b|getfixturevalue\(\s*[\"']real_redis[\"']")
    return {
        module_name(path)
        for path in TESTS.rglob("*.py")
        if path != TESTS / "conftest.py" and asks.search(path.read_text())
    }


def test_no_two_dedicated_modules_share_a_database() -> None:
    shared = {db: n for db, n in Counter(DEDICATED.values()).items() if n > 1}
    assert shared == {}, f"databases given to more than one module: {shared}"


def test_no_test_takes_the_benches_or_the_users_database() -> None:
    assert BENCH_REDIS_DB in RESERVED and USER_DB in RESERVED
    taken = set(DEDICATED.values()) | {NAMESPACED_DB}
    assert taken.isdisjoint(RESERVED), f"reserved databases in use: {taken & set(RESERVED)}"
    assert NAMESPACED_DB not in DEDICATED.values()
    assert taken <= set(REDIS_DATABASES)


def test_a_module_is_either_dedicated_or_namespaced() -> None:
    assert set(DEDICATED).isdisjoint(NAMESPACED)


def test_every_module_using_the_real_redis_is_allocated() -> None:
    missing = modules_using_the_real_redis() - set(DEDICATED) - NAMESPACED
    assert missing == set(), f"allocate these in tests/redis_dbs.py: {sorted(missing)}"


def test_every_allocated_module_exists() -> None:
    for module in (*DEDICATED, *NAMESPACED):
        assert (TESTS.parent / (module.replace(".", "/") + ".py")).is_file(), module


def test_a_module_gets_its_database_and_an_unlisted_one_a_clear_error() -> None:
    assert redis_db("tests.unit.test_store") == DEDICATED["tests.unit.test_store"]
    assert redis_db("tests.unit.test_breakers") == NAMESPACED_DB
    with pytest.raises(KeyError, match=r"tests\.unit\.test_nothing has no Redis database: allocate"):
        redis_db("tests.unit.test_nothing")


def test_the_modules_ask_for_their_database_by_name() -> None:
    """No allocated module picks a number itself: each calls `redis_db(__name__)` (a literal db in
    a URL or a `db=` argument would bypass the table)."""
    for module in (*DEDICATED, *NAMESPACED):
        source = (TESTS.parent / (module.replace(".", "/") + ".py")).read_text()
        assert "redis_db(__name__)" in source, module
        assert not re.search(r"6379/\d|\bdb=\d|redis_db=\d", source), module
    assert redis_dbs.__doc__ and "NAMESPACED_DB" in redis_dbs.__doc__
