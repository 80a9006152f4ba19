"""`.run/` is its owner's alone: 0700, secrets 0600, and a secret file open to others is refused."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from order_execution.cli.credentials import ensure_local_key
from order_execution.launcher.run_dir import UnsafeFile, private_dir, secret_file


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_directory_is_made_0700_and_an_open_one_tightened(tmp_path: Path) -> None:
    made = private_dir(tmp_path / "fresh" / ".run")
    assert mode(made) == 0o700
    opened = tmp_path / "old-run"
    opened.mkdir(mode=0o755)
    opened.chmod(0o755)
    private_dir(opened)
    assert mode(opened) == 0o700


def test_a_secret_is_made_0600_once_and_reused(tmp_path: Path) -> None:
    path = tmp_path / ".run" / "redis-password"
    first = secret_file(path)
    assert len(first) >= 40 and mode(path) == 0o600 and mode(path.parent) == 0o700
    assert secret_file(path) == first


@pytest.mark.parametrize("loose", [0o644, 0o640, 0o604, 0o660])
def test_an_existing_key_open_to_others_is_refused_saying_how_to_fix_it(tmp_path: Path, loose: int) -> None:
    path = tmp_path / ".run" / "api-key"
    key = ensure_local_key(path)
    path.chmod(loose)
    with pytest.raises(UnsafeFile) as caught:
        ensure_local_key(path)
    message = str(caught.value)
    assert f"chmod 600 {path}" in message and "remove it" in message and f"{loose:04o}" in message
    assert key not in message
    path.chmod(0o600)  # the fix the message gives works and keeps the key
    assert ensure_local_key(path) == key


def test_a_symlinked_key_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("planted-key-value\n")
    target.chmod(0o600)
    run = private_dir(tmp_path / ".run")
    (run / "api-key").symlink_to(target)
    with pytest.raises(UnsafeFile, match="not a regular file"):
        ensure_local_key(run / "api-key")


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a file to another user")
def test_a_key_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    path = tmp_path / ".run" / "api-key"
    ensure_local_key(path)
    os.chown(path, 12345, -1)
    with pytest.raises(UnsafeFile, match="belongs to user id 12345"):
        ensure_local_key(path)
