"""`launcher.processes.http_ok`, the readiness poll `up` runs while a server starts: an answer that is
not HTTP is "not ready", never an exception that ends `up`.

It happened under `up --ha`: polling gateway 2's /health/ready before anything listened there, the
poll connected to itself (Linux picks connect()'s source ports from the ephemeral range the
port was in) and read its own request back as the status line; http.client's BadStatusLine then
escaped `http_ok` and `up` exited with a traceback.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from order_execution.launcher.processes import http_ok


@contextmanager
def _answering(reply: bytes | None) -> Iterator[int]:
    """A server on a free loopback port that answers one connection with `reply`, or with the
    request's own first line (None: what a connection to itself reads); its port."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()

        def answer_once() -> None:
            connection, _ = server.accept()
            with connection:
                request = connection.recv(4096)
                connection.sendall(reply if reply is not None else request.split(b"\r\n")[0] + b"\r\n")

        thread = threading.Thread(target=answer_once, daemon=True)
        thread.start()
        yield server.getsockname()[1]
        thread.join(timeout=5)


def test_its_own_request_echoed_back_is_not_ready() -> None:
    with _answering(None) as port:
        assert http_ok(f"http://127.0.0.1:{port}/health/ready") is False


def test_a_200_is_ready_and_another_status_is_not() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    with _answering(ok) as port:
        assert http_ok(f"http://127.0.0.1:{port}/health/ready") is True
    unavailable = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    with _answering(unavailable) as port:
        assert http_ok(f"http://127.0.0.1:{port}/health/ready") is False
