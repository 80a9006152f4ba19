"""The gateway's HTTP/2 keepalive: it notices clients that vanished, and lets clients notice it.

A host that loses power sends nothing: no FIN, no RST. Without pings, a stream to a client on
it stays open (holding one of `server.max_streams`) and a client's stream to a gateway on it
waits forever. So the gateway pings every connection (`server.keepalive_ms`) and closes one
that does not answer (`server.keepalive_timeout_ms`); and it accepts clients' own pings as often
as `server.client_ping_min_ms`, also with no call open, where gRPC's default policy would close
a client pinging more often than every 5 minutes (GOAWAY "too_many_pings").
"""

from __future__ import annotations

from order_execution.runtime.settings import ServerSettings


def keepalive_options(server: ServerSettings) -> list[tuple[str, int]]:
    """The grpc server options for `server`'s keepalive settings."""
    return [
        ("grpc.keepalive_time_ms", server.keepalive_ms),
        ("grpc.keepalive_timeout_ms", server.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", server.client_ping_min_ms),
        ("grpc.http2.min_ping_interval_without_data_ms", server.keepalive_ms),
        ("grpc.http2.max_pings_without_data", 0),
    ]
