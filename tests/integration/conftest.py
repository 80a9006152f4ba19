"""Starts the service as separate processes on the real Redis and NATS (see launcher/stack.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from order_execution.launcher.stack import LocalStack, local_stack
from tests.redis_dbs import redis_db

TEST_REDIS_DB = redis_db(__name__)  # the service's keys and Dramatiq's queues for these tests live here


@pytest.fixture(scope="session")
def service(
    real_redis: str, real_nats: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    frozen_prices = ("--walk-interval-ms", "0", "--price", "BTCUSDT=50000", "--price", "ETHUSDT=3000")
    with local_stack(
        real_redis,
        real_nats,
        redis_db=TEST_REDIS_DB,
        log_dir=tmp_path_factory.mktemp("logs"),
        simulator_args=frozen_prices,
        # Sweep every second, so a missed event is settled within a test's patience.
        extra_env={
            "ORDER_EXECUTION__RECONCILE__INTERVAL_S": "1",
            "ORDER_EXECUTION__RECONCILE__GRACE_MS": "500",
        },
    ) as stack:
        yield stack
