"""`order-execution`: run the service's processes, or talk to a running gateway.

order-execution up          everything on this machine (gateway, worker, simulator; --ha: highly available)
order-execution gateway     the gRPC gateway (50051) with HTTP health/metrics (9091)
order-execution worker      worker processes running the order actors on the symbol queues
order-execution listener    user-data stream, reconciler and NATS relay (one leads, others stand by)
order-execution dashboard   the Dramatiq dashboard over the symbol queues (127.0.0.1:9181/dashboard/)
order-execution sim         the local Binance USD-M Futures simulator
order-execution order ...   create | get | cancel | list | watch orders over gRPC
order-execution risk ...    show | halt | reduce | resume | set: kill switch and risk limits
order-execution account ... show | leverage | margin-type: account settings at the exchange
"""

from __future__ import annotations

import argparse
import os
import sys

import uvloop

from order_execution.launcher.exchange_accounts import MAX_ACCOUNTS, check_account_count
from order_execution.runtime.settings import CONFIG_ENV, Settings, SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sim"]:
        from usdm_simulator.cli import main as simulator_main

        return int(simulator_main(argv[1:]))

    parser = argparse.ArgumentParser(
        prog="order-execution", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help=f"YAML settings file (default: ${CONFIG_ENV} or ./config.yaml)")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("gateway", help="run the gRPC gateway")
    worker = commands.add_parser("worker", help="run worker processes")
    worker.add_argument(
        "--processes", type=int, help="worker processes (default: worker.processes; 0 = one per CPU core)"
    )
    worker.add_argument(
        "--max-in-flight", type=int, help="orders in flight per process (default: worker.max_in_flight)"
    )
    worker.add_argument(
        "--queues",
        nargs="+",
        metavar="QUEUE",
        help="consume only these queues, e.g. orders.BTCUSDT (default: every symbol)",
    )
    commands.add_parser("listener", help="run a listener replica (user stream, reconciler, NATS relay)")
    commands.add_parser(
        "dashboard", help="serve the Dramatiq dashboard (dashboard.host, dashboard.port, dashboard.path)"
    )
    up = commands.add_parser("up", help="run gateway, worker, listener and simulator together")
    up.add_argument(
        "--no-simulator",
        action="store_true",
        help="use the exchange in the settings instead of starting the simulator",
    )
    up.add_argument(
        "--listeners", type=int, default=1, metavar="N", help="user-data-stream listeners (default: 1)"
    )
    up.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes (default: worker.processes; 0 = one per CPU core)",
    )
    up.add_argument(
        "--listen",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="address for the gateway's gRPC and HTTP ports and the /metrics endpoints (default 127.0.0.1: "
        "this machine only); anything else, e.g. 0.0.0.0, requires auth.enabled. The dashboard, "
        "simulator, Redis and NATS stay on 127.0.0.1",
    )
    up.add_argument(
        "--ha",
        action="store_true",
        help="high availability on this machine: its own Redis primary, 2 replicas and 3 sentinels and a "
        "3-node NATS cluster on 127.0.0.1 (never the Redis/NATS in the settings), 2 listeners, 2 gateways",
    )
    up.add_argument(
        "--no-rate-limits",
        action="store_true",
        help="load-test mode: the simulator enforces no rate limits and the service keeps no rate budget",
    )
    up.add_argument(
        "--accounts",
        type=_account_count,
        default=1,
        metavar="N",
        help="exchange accounts to make on the simulator and trade, named default, acct-2, ... acct-N "
        f"(1 to {MAX_ACCOUNTS}; default 1); their keys go to owner-only files under .run/accounts/",
    )
    commands.add_parser("sim", help="run the exchange simulator (see `order-execution sim --help`)")

    from order_execution.cli.order_args import add_order_commands

    add_order_commands(commands.add_parser("order", help="create, inspect and watch orders"))
    from order_execution.cli.risk import add_risk_commands

    add_risk_commands(commands.add_parser("risk", help="kill switch and risk limits (show, halt, ...)"))
    from order_execution.cli.account import add_account_commands

    add_account_commands(commands.add_parser("account", help="leverage, margin type and position mode"))

    args = parser.parse_args(argv)
    if args.config:
        os.environ[CONFIG_ENV] = os.path.abspath(args.config)  # child processes read it too
    try:
        if args.command == "order":
            from order_execution.cli.client import run_order_command

            return run_order_command(args)
        if args.command == "risk":
            from order_execution.cli.risk import run_risk_command

            return run_risk_command(args)
        if args.command == "account":
            from order_execution.cli.account import run_account_command

            return run_account_command(args)
        settings = load_settings()
        if args.command == "gateway":
            from order_execution.gateway.server import serve
            from order_execution.runtime.logs import configure_logging

            configure_logging(settings.logging, process="gateway", secrets=settings.secret_values())
            uvloop.run(serve(settings))
            return 0
        if args.command == "dashboard":
            from order_execution.cli.dashboard import serve as serve_dashboard
            from order_execution.runtime.logs import configure_logging

            configure_logging(settings.logging, process="dashboard", secrets=settings.secret_values())
            serve_dashboard(settings)
            return 0
        if args.command == "listener":
            from order_execution.listener.process import serve as serve_listener
            from order_execution.runtime.logs import configure_logging

            configure_logging(settings.logging, process="listener", secrets=settings.secret_values())
            uvloop.run(serve_listener(settings))
            return 0
        if args.command == "worker":
            return _run_worker(args, settings, argv)
        if args.command == "up":
            from order_execution.cli.up import run_up

            return run_up(
                settings,
                with_simulator=not args.no_simulator,
                listeners=args.listeners,
                workers=args.workers if args.workers is not None else settings.worker.processes,
                rate_limits=not args.no_rate_limits,
                listen=args.listen,
                ha=args.ha,
                accounts=args.accounts,
            )
    except SettingsError as exc:
        print(f"order-execution: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command}")
    return 2


def _account_count(text: str) -> int:
    """`up --accounts`: a whole number from 1 to MAX_ACCOUNTS, else argparse's error saying so."""
    try:
        return check_account_count(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a whole number from 1 to {MAX_ACCOUNTS}, got {text!r}"
        ) from None


def _run_worker(args: argparse.Namespace, settings: Settings, argv: list[str]) -> int:
    from order_execution.launcher.processes import python_command, run_together, worker_processes
    from order_execution.runtime.logs import configure_logging

    processes = worker_processes(args.processes if args.processes is not None else settings.worker.processes)
    if processes > 1:
        one = python_command("order_execution.cli", *argv, "--processes", "1")  # the last --processes wins
        return run_together([one] * processes)
    if args.max_in_flight:
        settings.worker.max_in_flight = args.max_in_flight
    from order_execution.workers.process import serve as serve_worker

    configure_logging(settings.logging, process="worker", secrets=settings.secret_values())
    serve_worker(settings, args.queues)
    return 0


if __name__ == "__main__":
    sys.exit(main())
