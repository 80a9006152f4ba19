"""The gateway's keepalive options follow the settings (gateway/keepalive.py)."""

from __future__ import annotations

from order_execution.gateway.keepalive import keepalive_options
from order_execution.runtime.settings import ServerSettings


def test_the_gateway_pings_clients_and_accepts_their_pings_as_often_as_the_settings_say() -> None:
    options = dict(
        keepalive_options(
            ServerSettings(keepalive_ms=7000, keepalive_timeout_ms=3000, client_ping_min_ms=1500)
        )
    )
    assert options["grpc.keepalive_time_ms"] == 7000
    assert options["grpc.keepalive_timeout_ms"] == 3000
    assert options["grpc.http2.min_recv_ping_interval_without_data_ms"] == 1500
    assert options["grpc.keepalive_permit_without_calls"] == 1  # a client with no call open may ping too
