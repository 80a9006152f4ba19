"""`up --accounts N`: N simulator accounts, named default, acct-2, ..., reach the service's
processes as owner-only key files named in `ORDER_EXECUTION__ACCOUNTS`, never as keys in
clear; one account is today's stack, its key in the environment.

`run_up` runs for real with a launcher that records instead of starting processes: what
it records is what the simulator and every service process would get.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from order_execution.cli import up
from order_execution.cli.main import main
from order_execution.launcher.exchange_accounts import (
    ACCOUNTS_ENV,
    account_names,
    check_account_count,
    generate_accounts,
)
from order_execution.launcher.launch import simulator_command
from order_execution.runtime.settings import Settings, load_settings

SIM_BASE = "http://127.0.0.1:18090"


class RecordingLauncher:
    """Stands in for `Launcher` in `run_up`: keeps the simulator's accounts and the environment
    each service process would start with."""

    last: RecordingLauncher

    def __init__(self, log_dir: Path, *, env: dict[str, str], **_: Any) -> None:
        self.env = env  # `run_up` keeps adding to it, as it does to the real launcher's
        self.simulator_given: tuple[Any, ...] = ()
        self.service_envs: dict[str, dict[str, str]] = {}
        RecordingLauncher.last = self

    def simulator(self, port: int, *given: Any) -> None:
        self.simulator_given = given

    def _service(self, name: str) -> None:
        self.service_envs[name] = dict(self.env)

    def worker(self, name: str, **_: Any) -> None:
        self._service(name)

    def listener(self, name: str, **_: Any) -> None:
        self._service(name)

    def gateway(self, name: str, ready_url: str, **_: Any) -> None:
        self._service(name)

    def dashboard(self, port: int) -> None:
        self._service("dashboard")


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`up` run from an empty directory (its .run/ there), with no Redis, NATS or processes."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(up, "Launcher", RecordingLauncher)
    monkeypatch.setattr(up, "ensure_redis", lambda settings, launcher, run_dir: ({}, "recorded"))
    monkeypatch.setattr(up, "ensure_nats", lambda settings, launcher, run_dir: ({}, "recorded"))
    monkeypatch.setattr(up, "_wait", lambda supervisor, stop_signals: 0)
    monkeypatch.setattr(up, "free_port", lambda: 18090)
    monkeypatch.setattr(up, "port_open", lambda host, port: port == 8090)  # the simulator gets 18090
    return tmp_path


def run(settings: Settings, **kwargs: Any) -> tuple[int, RecordingLauncher]:
    code = up.run_up(settings, workers=1, **kwargs)
    return code, RecordingLauncher.last


def child_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a service process started with `env` builds (no config file here)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def test_three_accounts_reach_the_service_as_private_key_files(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings()
    code, launcher = run(settings, accounts=3)
    assert code == 0
    [credentials, *options] = launcher.simulator_given
    assert len(credentials) == 3 and len({key for key, _ in credentials}) == 3
    assert options == ["--symbols", ",".join(settings.symbols)]

    assert set(launcher.service_envs) == {"worker", "listener", "gateway", "dashboard"}
    env = launcher.service_envs["gateway"]
    assert all(other == env for other in launcher.service_envs.values())
    entries = json.loads(env[ACCOUNTS_ENV])
    assert [entry["name"] for entry in entries] == ["default", "acct-2", "acct-3"]
    directory = (in_tmp / ".run" / "accounts").resolve()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for entry, (key, secret) in zip(entries, credentials, strict=True):
        assert set(entry) == {"name", "api_key_file", "secret_key_file"}
        for field, value in (("api_key_file", key), ("secret_key_file", secret)):
            path = Path(entry[field])
            assert path.parent == directory and path.is_absolute()
            assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.stat().st_uid == os.getuid()
            assert path.read_text().strip() == value
    secrets_made = {part for pair in credentials for part in pair}
    # No key or secret in clear in any process's environment, nor in any file but its own key file.
    assert not [name for name, value in env.items() if any(s in value for s in secrets_made)]
    assert "BINANCE_API_KEY" not in env and "BINANCE_SECRET_KEY" not in env
    key_files = {Path(entry[field]) for entry in entries for field in ("api_key_file", "secret_key_file")}
    for path in in_tmp.rglob("*"):
        if path.is_file() and path.resolve() not in key_files:
            assert not any(s in path.read_text(errors="replace") for s in secrets_made), path

    service = child_settings(env, monkeypatch)
    assert service.account_names == ["default", "acct-2", "acct-3"]
    for account, (key, secret) in zip(service.trading_accounts, credentials, strict=True):
        assert account.exchange.api_key.get_secret_value() == key
        assert account.exchange.secret_key.get_secret_value() == secret
        assert account.exchange.base_url == SIM_BASE and account.egress == "default"
    [local] = service.auth.clients  # the key `up` made for the CLI here: every account is its to trade
    assert local.name == "local" and all(local.may_trade(name) for name in service.account_names)

    summary = capsys.readouterr().out
    assert "Accounts   default, acct-2, acct-3  (keys in " in summary
    assert not any(s in summary for s in secrets_made)


def test_one_account_is_todays_stack(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, launcher = run(load_settings())
    assert code == 0
    [[(key, secret)], *_] = launcher.simulator_given
    env = launcher.service_envs["gateway"]
    assert (env["BINANCE_API_KEY"], env["BINANCE_SECRET_KEY"], env["BINANCE_BASE_URL"]) == (
        key,
        secret,
        SIM_BASE,
    )
    assert ACCOUNTS_ENV not in env and not (in_tmp / ".run" / "accounts").exists()
    [account] = child_settings(env, monkeypatch).trading_accounts
    assert (account.name, account.exchange.api_key.get_secret_value()) == ("default", key)


@pytest.mark.parametrize(
    ("accounts", "options", "message"),
    [
        (0, {}, "--accounts must be between 1 and 20, got 0"),
        (21, {}, "--accounts must be between 1 and 20, got 21"),
        (2, {"with_simulator": False}, "--accounts makes accounts on the bundled simulator"),
    ],
)
def test_refused_account_counts_say_why(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], accounts: int, options: dict[str, Any], message: str
) -> None:
    assert up.run_up(load_settings(), accounts=accounts, **options) == 2
    assert message in capsys.readouterr().err


def test_accounts_in_the_settings_are_not_replaced_silently(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ACCOUNTS_ENV, '[{"name": "mine", "api_key": "k", "secret_key": "s"}]')
    assert up.run_up(load_settings(), accounts=2) == 2
    assert "would replace the accounts in the settings (mine)" in capsys.readouterr().err


@pytest.mark.parametrize("given", ["0", "21", "three", "-1"])
def test_the_cli_refuses_a_bad_count(given: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["up", "--accounts", given])
    assert stopped.value.code == 2
    assert (
        f"argument --accounts: must be a whole number from 1 to 20, got {given!r}" in capsys.readouterr().err
    )


def test_names_and_generated_keys() -> None:
    assert account_names(1) == ["default"]
    assert account_names(4) == ["default", "acct-2", "acct-3", "acct-4"]
    made = generate_accounts(20)
    assert len({part for account in made for part in account.credentials}) == 40
    assert check_account_count(20) == 20
    with pytest.raises(ValueError, match="between 1 and 20, got 21"):
        account_names(21)


def test_the_simulator_command_takes_one_account_or_several() -> None:
    one = simulator_command(8090, "k1", "s1", "--symbols", "BTCUSDT")
    assert one[one.index("--port") :] == ["--port", "8090", "--account", "k1:s1", "--symbols", "BTCUSDT"]
    several = simulator_command(8090, [("k1", "s1"), ("k2", "s2")], "--symbols", "BTCUSDT")
    assert several[several.index("--port") :] == [
        "--port", "8090", "--account", "k1:s1", "--account", "k2:s2", "--symbols", "BTCUSDT",
    ]  # fmt: skip
    assert simulator_command(8090, [("k1", "s1")]) == simulator_command(8090, "k1", "s1")
    with pytest.raises(ValueError, match="at least one account"):
        simulator_command(8090, [])
