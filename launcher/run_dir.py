"""`.run/`, where `up` keeps logs, data and secrets: readable by its owner only.

The directory is made 0700 (one that exists, owned by this user, is tightened to 0700).
A file holding a secret (the API key, the Redis and NATS passwords, the servers' config
files) is written 0600; one that already exists is checked before it is used: owned by
this user and unreadable by group and others, else `UnsafeFile` says how to fix it. A
secret is never trusted from a file someone else could have written or read.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path


class UnsafeFile(RuntimeError):
    """A file or directory that should be this user's alone is not; the message says how to fix it."""


def private_dir(path: Path) -> Path:
    """Create `path` (and its parents) mode 0700, or tighten an existing one of ours to 0700.

    Raises UnsafeFile if it is a symlink or belongs to another user.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise UnsafeFile(f"{path} is not a directory (a symlink?); remove it and start again")
    if info.st_uid != os.getuid():
        raise UnsafeFile(
            f"{path} belongs to user id {info.st_uid}, not to you ({os.getuid()}); "
            f"remove it (or run from another directory)"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        path.chmod(0o700)
    return path


def check_private(path: Path) -> None:
    """Raise UnsafeFile unless `path` is a regular file owned by this user, no access for group/other."""
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeFile(f"{path} is not a regular file (a symlink?); remove it and a new one is made")
    if info.st_uid != os.getuid():
        raise UnsafeFile(
            f"{path} belongs to user id {info.st_uid}, not to you ({os.getuid()}): its secret may be "
            f"known to someone else; remove it and a new one is made"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise UnsafeFile(
            f"{path} is open to group or others (mode {mode:04o}): its secret may have been read; "
            f"`chmod 600 {path}` to keep it, or remove it and a new one is made"
        )


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` with mode 0600 (replacing it); the directory must be private already."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)  # an existing file keeps its mode through O_CREAT
        out.write(text)


def secret_file(path: Path, make: Callable[[], str] = lambda: secrets.token_urlsafe(32)) -> str:
    """The secret kept in `path` (checked with `check_private`), first writing `make()` there if absent.

    Raises UnsafeFile for a file that exists but is not private.
    """
    private_dir(path.parent)
    if path.exists() or path.is_symlink():
        check_private(path)
        value = path.read_text().strip()
        if value:
            return value
    value = make()
    write_private(path, value + "\n")
    return value
