"""Simulator accounts for a local stack (`up --accounts N`, the test stack) and how the service's
processes learn them.

One account is today's single-account stack: the service gets its key in the environment
(`BINANCE_API_KEY`, `BINANCE_SECRET_KEY`) and calls it `default`. Several are named `default`,
`acct-2`, `acct-3`, ...: the first keeps the name (and so the queues and Redis keys) of the
single-account stack, and a client that names no account still trades on it. Their keys
and secrets go to files, one each, mode 0600 in a private directory (launcher/run_dir.py);
the processes get only the paths, as `accounts` JSON in `ORDER_EXECUTION__ACCOUNTS`
(`accounts[].api_key_file` / `secret_key_file`), so no key is written in clear into the
environment or a YAML file. All share one egress: the simulator counts REQUEST_WEIGHT per
IP, and they all come from this machine's.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from order_execution.launcher.run_dir import private_dir, write_private
from order_execution.runtime.settings_accounts import DEFAULT_ACCOUNT

MAX_ACCOUNTS = 20  # a local stack's worth: each account is one more executor in every worker
ACCOUNTS_ENV = "ORDER_EXECUTION__ACCOUNTS"


@dataclass(frozen=True)
class GeneratedAccount:
    """A simulator account made for a stack: the name the service knows it by, its key and secret."""

    name: str
    key: str
    secret: str = field(repr=False)  # kept out of reprs: a failing test prints its stack's

    @property
    def credentials(self) -> tuple[str, str]:
        """(key, secret), as the launcher starts the simulator with it."""
        return self.key, self.secret


def check_account_count(count: int) -> int:
    """`count` if it is a number of accounts a local stack may have (1 to MAX_ACCOUNTS), else
    ValueError saying so."""
    if not 1 <= count <= MAX_ACCOUNTS:
        raise ValueError(f"--accounts must be between 1 and {MAX_ACCOUNTS}, got {count}")
    return count


def account_names(count: int) -> list[str]:
    """The names of a stack's `count` accounts: `default`, then `acct-2`, `acct-3`, ..."""
    check_account_count(count)
    return [DEFAULT_ACCOUNT, *(f"acct-{index}" for index in range(2, count + 1))]


def generate_accounts(count: int) -> list[GeneratedAccount]:
    """`count` accounts (1 to MAX_ACCOUNTS, else ValueError), each with a fresh random key and secret."""
    return [
        GeneratedAccount(name, secrets.token_hex(32), secrets.token_hex(32)) for name in account_names(count)
    ]


def single_account_env(account: GeneratedAccount) -> dict[str, str]:
    """The environment that makes `account` the service's only one (`default`), as a
    single-account stack always had it: the key and secret in the seed's variables."""
    return {"BINANCE_API_KEY": account.key, "BINANCE_SECRET_KEY": account.secret}


def account_files_env(directory: Path, accounts: list[GeneratedAccount]) -> dict[str, str]:
    """Write each account's key and secret to `<directory>/<name>.api-key` and `.secret-key`
    (mode 0600, `directory` made private, files of an earlier run replaced) and return the
    environment that gives the service these accounts by those paths (absolute).

    Raises UnsafeFile (launcher/run_dir.py) if `directory` is not this user's alone.
    """
    directory = private_dir(directory).resolve()
    entries = []
    for account in accounts:
        key_file, secret_file = (
            directory / f"{account.name}.api-key",
            directory / f"{account.name}.secret-key",
        )
        write_private(key_file, account.key + "\n")
        write_private(secret_file, account.secret + "\n")
        entries.append(
            {"name": account.name, "api_key_file": str(key_file), "secret_key_file": str(secret_file)}
        )
    return {ACCOUNTS_ENV: json.dumps(entries)}


def service_accounts_env(directory: Path, accounts: list[GeneratedAccount]) -> dict[str, str]:
    """How the service's processes learn `accounts`: one in the environment as always
    (`single_account_env`), several by key files under `directory` (`account_files_env`)."""
    if len(accounts) == 1:
        return single_account_env(accounts[0])
    return account_files_env(directory, accounts)
