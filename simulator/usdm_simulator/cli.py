"""Command line: ``python -m usdm_simulator`` / ``usdm-simulator`` / ``order-execution sim``.

Starts the simulator and prints a banner.

Exit status: 0 after SIGINT/SIGTERM, 2 for bad arguments or settings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import secrets
import signal
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from usdm_simulator.app import create_app
from usdm_simulator.config import AccountConfig, SimulatorConfig, load_config
from usdm_simulator.symbols import DATA_FILE, KNOWN_SYMBOLS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="usdm-simulator", description="Local Binance USD-M Futures exchange simulator."
    )
    p.add_argument(
        "--config", type=Path, help="YAML file with simulator settings (field names of SimulatorConfig)"
    )
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to bind (default 8090; 0 picks a free port)")
    p.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="KEY:SECRET[:orders_per_10s=N][:orders_per_minute=N]",
        help="API key and secret of an account (repeatable), optionally with its own ORDERS limits "
        "(default: --orders-per-10s / --orders-per-minute); one account is generated if none is given",
    )
    p.add_argument(
        "--symbols",
        help=f"comma-separated subset of the contracts in usdm_simulator/{DATA_FILE} "
        f"(default: all {len(KNOWN_SYMBOLS)}: {', '.join(KNOWN_SYMBOLS)})",
    )
    p.add_argument(
        "--price",
        action="append",
        default=[],
        metavar="SYMBOL=PRICE",
        help="initial reference price of a symbol (repeatable)",
    )
    p.add_argument("--seed", type=int, help="seed of the price walk and of fault probabilities")
    p.add_argument(
        "--walk-interval-ms", type=int, help="price walk period in ms; 0 freezes prices (default 1000)"
    )
    p.add_argument("--walk-step-bps", type=Decimal, help="std. deviation of one walk step in basis points")
    p.add_argument(
        "--matching",
        choices=("book", "reference"),
        help="book (default): orders walk each symbol's order book and rest in its queue; "
        "reference: they trade at the reference price, in full unless liquidity is capped",
    )
    p.add_argument(
        "--replay",
        action="append",
        default=[],
        metavar="SYMBOL=PATH",
        help="drive SYMBOL's price from a CSV of trades or klines (Binance dump layout; repeatable); "
        "the walk takes over from the last price when it ends",
    )
    p.add_argument("--replay-speed", type=float, help="replay time factor: 1 real time (default), 10 faster")
    p.add_argument(
        "--time-scale",
        type=float,
        help="exchange seconds per wall second of the simulated clock (server time, funding, listenKey "
        "expiry; default 1)",
    )
    p.add_argument("--weight-limit", type=int, help="REQUEST_WEIGHT per minute per IP (default 2400)")
    p.add_argument("--orders-per-10s", type=int, help="ORDERS per 10 s per account (default 300)")
    p.add_argument("--orders-per-minute", type=int, help="ORDERS per minute per account (default 1200)")
    p.add_argument(
        "--no-rate-limits",
        action="store_true",
        help="load tests only: enforce no REQUEST_WEIGHT/ORDERS limits (never 429/418); headers still count",
    )
    return p


# The per-account options `--account` takes after KEY:SECRET, each as `:name=N`.
ACCOUNT_OPTIONS = ("orders_per_10s", "orders_per_minute")


def parse_account(item: str) -> AccountConfig:
    """An account from ``--account KEY:SECRET[:orders_per_10s=N][:orders_per_minute=N]``.

    Options are read from the end, so a secret that itself holds ``:`` still parses. Raises ValueError
    naming the flag and the rule for a missing key or secret, an unknown option or a bad number.
    """
    key, sep, rest = item.partition(":")
    parts = rest.split(":") if sep else []
    options: dict[str, str] = {}
    while len(parts) > 1 and "=" in parts[-1]:
        name, _, value = parts.pop().partition("=")
        if name not in ACCOUNT_OPTIONS:
            raise ValueError(
                f"--account: unknown option {name!r} after KEY:SECRET; known: {', '.join(ACCOUNT_OPTIONS)}"
            )
        if not re.fullmatch(r"[0-9]{1,9}", value) or int(value) < 1:
            raise ValueError(f"--account: {name} must be a whole number of at least 1, got {value!r}")
        options[name] = value
    secret = ":".join(parts)
    if not key or not secret:
        raise ValueError(
            "--account expects KEY:SECRET (both non-empty) optionally followed by :orders_per_10s=N "
            "and :orders_per_minute=N (docker-compose: set BINANCE_API_KEY and BINANCE_SECRET_KEY in .env)"
        )
    return AccountConfig(key=key, secret=secret, **{name: int(value) for name, value in options.items()})


def _overrides(args: argparse.Namespace, base: SimulatorConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "seed": args.seed,
        "walk_interval_ms": args.walk_interval_ms,
        "walk_step_bps": args.walk_step_bps,
        "matching": args.matching,
        "time_scale": args.time_scale,
        "replay_speed": args.replay_speed,
    }
    if args.symbols:
        out["symbols"] = [s for s in args.symbols.split(",") if s]
    accounts = [parse_account(item) for item in args.account]
    if accounts:
        out["accounts"] = accounts
    if args.price:
        prices = dict(base.reference_prices)
        for item in args.price:
            symbol, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--price expects SYMBOL=PRICE, got {item!r}")
            prices[symbol.upper()] = Decimal(value)
        out["reference_prices"] = prices
    if args.replay:
        replay = dict(base.replay)
        for item in args.replay:
            symbol, sep, path = item.partition("=")
            if not sep or not symbol or not path:
                raise ValueError(f"--replay expects SYMBOL=PATH, got {item!r}")
            replay[symbol.upper()] = Path(path)
        out["replay"] = replay
    limits = base.rate_limits.model_copy(
        update={
            k: v
            for k, v in {
                "weight_per_minute": args.weight_limit,
                "orders_per_10s": args.orders_per_10s,
                "orders_per_minute": args.orders_per_minute,
            }.items()
            if v is not None
        }
    )
    if args.no_rate_limits:
        limits = limits.model_copy(update={"enabled": False})
    out["rate_limits"] = limits
    return out


def build_config(argv: list[str] | None) -> tuple[SimulatorConfig, bool]:
    """Parse ``argv`` into settings; return them and whether an account was generated."""
    args = _parser().parse_args(argv)
    base = load_config(args.config)
    config = load_config(args.config, **_overrides(args, base))
    generated = False
    if not config.accounts:
        key, secret = secrets.token_hex(32), secrets.token_hex(32)
        config = config.model_copy(update={"accounts": [AccountConfig(key=key, secret=secret)]})
        generated = True
    return config, generated


def _banner(config: SimulatorConfig, port: int, generated: bool) -> str:
    base = f"http://{config.host}:{port}"
    lines = [
        "Binance USD-M Futures simulator",
        f"  REST       {base}  (e.g. {base}/fapi/v1/time)",
        f"  websocket  ws://{config.host}:{port}/private/ws?listenKey=<key>  (legacy /ws/<key>)",
        f"  admin      {base}/admin/  (orders, requests, faults, price, reset)",
        f"  symbols    {', '.join(config.symbols)}",
    ]
    for symbol, path in config.replay.items():
        lines.append(f"  replay     {symbol} from {path} at {config.replay_speed:g}x")
    for account in config.accounts:
        tag = " (generated)" if generated else ""
        own = [
            f"{limit} orders/{window}"
            for limit, window in ((account.orders_per_10s, "10s"), (account.orders_per_minute, "min"))
            if limit is not None
        ]
        limits = f"  ({', '.join(own)})" if own else ""
        lines.append(f"  account{tag}  key={account.key}  secret={account.secret}{limits}")
    lines.append(f"  matching: {_MATCHING_LINES[config.matching]}")
    lines.append(f"  {_rate_limit_line(config)}")
    return "\n".join(lines)


_MATCHING_LINES = {
    "book": "order book (MARKET orders walk it, resting orders queue and fill as the market trades)",
    "reference": "reference price (--matching reference: orders trade at the reference price)",
}


def _rate_limit_line(config: SimulatorConfig) -> str:
    """The banner line that says whether rate limits are enforced, and which."""
    limits = config.rate_limits
    if not limits.enabled:
        return "rate limits: OFF (--no-rate-limits, load tests only)"
    return (
        f"rate limits: {limits.weight_per_minute} weight/min per IP, {limits.orders_per_10s} orders/10s "
        f"and {limits.orders_per_minute} orders/min per account"
    )


async def serve(config: SimulatorConfig, generated: bool) -> None:
    """Run the simulator until SIGINT or SIGTERM, printing the banner once it listens."""
    runner = web.AppRunner(create_app(config), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
    await site.start()
    port = config.port
    if port == 0:
        for address in runner.addresses:
            port = int(address[1])
            break
    print(_banner(config, port, generated), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), serve until SIGINT/SIGTERM; return the exit status."""
    try:
        config, generated = build_config(argv)
    except (ValidationError, ValueError) as exc:
        print(f"simulator: invalid settings: {exc}", file=sys.stderr)
        return 2
    runner: Any = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    try:
        runner(serve(config, generated))
    except OSError as exc:
        print(f"simulator: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"simulator: invalid settings: {exc}", file=sys.stderr)
        return 2
    print("simulator: stopped", flush=True)
    return 0
