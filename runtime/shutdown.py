"""Stopping a process on SIGTERM/SIGINT within its grace period, whatever blocks it.

Each process drains with every step bounded by `server.shutdown_grace_ms`. What no
asyncio timeout can bound is a call that blocks the event loop itself or a task that
swallows its cancel (a redis-py blocking read can); so the signal also arms a timer
thread that ends the process
`margin_s` after the grace period if it is still running. What it had not settled is
still in Dramatiq's ack set or the outbox's pending list, and is redelivered from there.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)

EXIT_AFTER_GRACE = 3  # the exit status when the timer had to end the process


def stop_on_signals(stop: asyncio.Event, *, grace_s: float, process: str, margin_s: float = 1.0) -> None:
    """On SIGTERM or SIGINT set `stop` and arm the last-resort exit (`grace_s + margin_s`).

    A Python-level handler, not `loop.add_signal_handler`, so it runs even while a
    blocking call holds the event loop. Call from the running loop's thread.
    """
    loop = asyncio.get_running_loop()
    armed = threading.Event()

    def signalled(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(stop.set)
        if armed.is_set():
            return
        armed.set()
        log.info("%s stopping (signal %d): draining within %.1f s", process, signum, grace_s)
        timer = threading.Timer(grace_s + margin_s, _exit_now, args=(process, grace_s))
        timer.daemon = True
        timer.start()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signalled)


def _exit_now(process: str, grace_s: float) -> None:
    log.error(
        "%s did not finish draining within the %.1f s grace period; exiting now "
        "(unsettled messages are redelivered by the other workers' maintenance)",
        process,
        grace_s,
    )
    logging.shutdown()
    os._exit(EXIT_AFTER_GRACE)
