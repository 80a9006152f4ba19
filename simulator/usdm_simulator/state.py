"""The simulator's whole state, built once from the settings and shared by every request handler."""

from __future__ import annotations

from dataclasses import dataclass

from usdm_simulator.algobook import AlgoBook
from usdm_simulator.auth import Credentials
from usdm_simulator.clock import ExchangeClock
from usdm_simulator.config import SimulatorConfig
from usdm_simulator.countdown import CountdownTimers
from usdm_simulator.faults import FaultRegistry
from usdm_simulator.funding import FundingSchedule
from usdm_simulator.income import IncomeLedger
from usdm_simulator.journal import Journal
from usdm_simulator.margin_calls import MarginCalls
from usdm_simulator.market import MarketData
from usdm_simulator.matching import MatchingEngine
from usdm_simulator.ratelimit import RateLimiter
from usdm_simulator.symbols import build_specs
from usdm_simulator.userstream import UserStreams


@dataclass
class SimulatorState:
    """Clock, matching engine, user streams, faults, rate limiter, request journal, algo book, countdowns,
    income ledger, funding schedule and public market data."""

    config: SimulatorConfig
    clock: ExchangeClock
    engine: MatchingEngine
    streams: UserStreams
    faults: FaultRegistry
    limiter: RateLimiter
    journal: Journal
    credentials: dict[str, Credentials]
    algos: AlgoBook
    countdowns: CountdownTimers
    market: MarketData
    income: IncomeLedger
    funding: FundingSchedule
    margin_calls: MarginCalls

    @classmethod
    def build(cls, config: SimulatorConfig, endpoints: frozenset[str] = frozenset()) -> SimulatorState:
        """Wire the components for ``config`` (which must list at least one account).

        ``endpoints`` names the REST endpoints (``"METHOD /path"``) faults may target.
        """
        if not config.accounts:
            raise ValueError("the simulator needs at least one account")
        clock = ExchangeClock(config.time_scale)
        faults = FaultRegistry(clock, config.seed, endpoints)
        streams = UserStreams(config, clock, faults)
        engine = MatchingEngine(
            config,
            build_specs(config.symbols, config.reference_prices, config.symbol_overrides),
            clock,
            streams.publish,
            streams.has_listeners,
        )
        income = IncomeLedger()
        income.reset(engine.accounts.values(), clock.now_ms())
        state = cls(
            config=config,
            clock=clock,
            engine=engine,
            streams=streams,
            faults=faults,
            limiter=RateLimiter(config.rate_limits, accounts=config.accounts),
            journal=Journal(config.journal_size),
            credentials={a.key: Credentials(a.key, a.secret) for a in config.accounts},
            algos=AlgoBook(),
            countdowns=CountdownTimers(),
            market=MarketData(engine.specs, config.seed, clock, engine.book_levels),
            income=income,
            funding=FundingSchedule(clock, engine, income, streams.publish),
            margin_calls=MarginCalls(engine, clock, streams.publish),
        )
        state.market.start(engine.prices)
        engine.price_listeners.append(state.market.on_price)
        engine.price_listeners.append(state.margin_calls.on_price)
        engine.trade_listeners.append(state.market.print_trades)
        if config.matching == "book":
            state.market.market_trade_listeners.append(engine.on_market_trade)
        for fault in config.faults:
            faults.arm(fault)
        return state

    def reset(self) -> None:
        """Clear orders, positions, requests, faults, counters, listenKeys, income and funding settlements
        (prices and funding rates back to initial; the clock keeps running)."""
        self.engine.reset()
        self.market.start(self.engine.prices)
        self.income.reset(self.engine.accounts.values(), self.clock.now_ms())
        self.funding.reset()
        self.margin_calls.reset()
        self.algos.reset()
        self.countdowns.reset()
        self.journal.clear()
        self.faults.clear()
        self.limiter.reset()
        self.streams.reset()
