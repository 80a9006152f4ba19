"""What Docker reads from `deploy/Dockerfile` and `.dockerignore`, without a Docker engine.

`parse_dockerfile` splits a Dockerfile into stages of instructions as Docker's parser does
(comments, line continuations, global ARGs before the first FROM, `FROM image AS name`);
`expand` substitutes `$VAR`, `${VAR}`, `${VAR:-default}` and `${VAR:+alternative}` in a word
as ENV, WORKDIR, COPY and FROM do; `env_pairs` reads an ENV instruction. `BuildContext`
is the set of files `docker build` sends: the directory filtered by `.dockerignore` with
Docker's pattern semantics (github.com/moby/patternmatcher: Go `filepath.Match` syntax,
`**` for any number of directories, `!` re-includes, the last matching line wins, and a
pattern that matches a directory excludes everything under it).

Used by tests/docker_build.py (which runs the build stage) and tests/unit/test_deploy_files.py.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

_KNOWN = frozenset(
    {
        "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
        "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
    }
)  # fmt: skip
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_VARIABLE = re.compile(
    rf"\$(?:\{{(?P<braced>{_NAME})(?::(?P<op>[-+])(?P<word>[^}}]*))?\}}|(?P<bare>{_NAME}))"
)


class DockerfileError(ValueError):
    """The Dockerfile or .dockerignore is one Docker would refuse (or one this reader does not know)."""


@dataclass(frozen=True)
class Instruction:
    """One logical instruction: its keyword (upper case), its arguments as written, its first line."""

    keyword: str
    arguments: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of `RUN`/`CMD`/`ENTRYPOINT`/`SHELL ["a", "b"]`, or None for the shell form."""
        text = self.arguments.strip()
        if not text.startswith("["):
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return None  # Docker, too, runs a malformed array as a shell command
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            return None
        return value

    def flags_and_words(self) -> tuple[dict[str, str], list[str]]:
        """`--name=value` flags (COPY --from=build ...) and the remaining whitespace-separated words."""
        flags: dict[str, str] = {}
        words = self.exec_form() or self.arguments.split()
        while words and words[0].startswith("--"):
            name, _, value = words.pop(0)[2:].partition("=")
            flags[name] = value
        return flags, words


@dataclass
class Stage:
    """A `FROM` and the instructions after it, up to the next `FROM`."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def of(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        """The stage `FROM ... AS name`; DockerfileError if there is none."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise DockerfileError(f"no stage named {name!r}")


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, text) of each instruction: comment lines dropped, `\\` continuations joined."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops comment and empty lines, inside continuations too
        if not pending:
            start = number
        if raw.rstrip().endswith("\\"):
            pending.append(raw.rstrip()[:-1])
            continue
        pending.append(raw)
        yield start, "".join(pending).strip()
        pending = []
    if pending:
        yield start, "".join(pending).strip()


def parse_dockerfile(text: str) -> Dockerfile:
    """Stages and instructions of a Dockerfile; DockerfileError for an unknown instruction."""
    if re.search(r"(?mi)^#\s*escape\s*=", text):
        raise DockerfileError("a changed escape character is not supported here")
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line, logical in logical_lines(text):
        keyword, _, arguments = logical.partition(" ")
        keyword = keyword.upper()
        if keyword not in _KNOWN:
            raise DockerfileError(f"line {line}: unknown instruction {keyword}")
        instruction = Instruction(keyword, arguments.strip(), line)
        if keyword == "FROM":
            words = expand(instruction.arguments, global_args).split()
            words = [w for w in words if not w.startswith("--platform=")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            if len(words) not in (1, 3) or (len(words) == 3 and name is None):
                raise DockerfileError(f"line {line}: FROM image [AS name], not {instruction.arguments!r}")
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            if keyword != "ARG":
                raise DockerfileError(f"line {line}: only ARG may come before the first FROM")
            name, _, default = instruction.arguments.partition("=")
            global_args[name.strip()] = default.strip()
        else:
            stages[-1].instructions.append(instruction)
    if not stages:
        raise DockerfileError("no FROM")
    return Dockerfile(global_args, stages)


def expand(word: str, env: Mapping[str, str]) -> str:
    """`word` with Docker's variable forms substituted from `env` (unset = empty)."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bare")
        value = env.get(name, "")
        op = match.group("op")
        if op == "-":
            return value or match.group("word")
        if op == "+":
            return match.group("word") if value else ""
        return value

    return _VARIABLE.sub(substitute, word)


def env_pairs(arguments: str, env: Mapping[str, str]) -> dict[str, str]:
    """The variables one ENV instruction sets: `K=V K2="V 2"` or the legacy `K V`; values expanded.

    Every value is expanded against the environment before the instruction, as Docker does.
    """
    words = _split_words(arguments)
    if words and "=" not in words[0][0]:
        name, _, value = arguments.strip().partition(" ")
        return {name: expand(value.strip(), env)}
    pairs: dict[str, str] = {}
    for raw, literal in words:
        name, sep, value = raw.partition("=")
        if not sep or not name:
            raise DockerfileError(f"ENV: {raw!r} is not NAME=value")
        pairs[name] = value if literal else expand(value, env)
    return pairs


def _split_words(text: str) -> list[tuple[str, bool]]:
    """Whitespace-separated words with quotes removed; True where the value was single-quoted."""
    words: list[tuple[str, bool]] = []
    current: list[str] = []
    literal = False
    quote = ""
    chars = iter(text.strip())
    for char in chars:
        if quote:
            if char == quote:
                quote = ""
            elif char == "\\" and quote == '"':
                current.append(next(chars, ""))
            else:
                current.append(char)
        elif char in "\"'":
            quote = char
            literal = literal or char == "'"
        elif char == "\\":
            current.append(next(chars, ""))
        elif char.isspace():
            if current:
                words.append(("".join(current), literal))
                current, literal = [], False
        else:
            current.append(char)
    if quote:
        raise DockerfileError(f"unterminated quote in {text!r}")
    if current:
        words.append(("".join(current), literal))
    return words


# --- .dockerignore ------------------------------------------------------------------------------


@dataclass(frozen=True)
class IgnorePattern:
    """One .dockerignore line, compiled as moby's patternmatcher compiles it."""

    pattern: str
    reinclude: bool
    kind: str  # exact | prefix | suffix | regexp
    regex: re.Pattern[str] | None

    @classmethod
    def compile(cls, line: str) -> IgnorePattern:
        reinclude = line.startswith("!")
        pattern = line[1:].strip() if reinclude else line
        pattern = posixpath.normpath(pattern)
        if len(pattern) > 1 and pattern.startswith("/"):
            pattern = pattern[1:]
        regex, kind = "^", "exact"
        chars = list(pattern)
        i = 0
        while i < len(chars):
            char = chars[i]
            if char == "*" and i + 1 < len(chars) and chars[i + 1] == "*":
                leading = i == 0
                i += 2
                if i < len(chars) and chars[i] == "/":
                    i += 1  # "**/" is "**"
                if i >= len(chars):  # a trailing "**" accepts everything below
                    if kind == "exact":
                        kind = "prefix"
                    else:
                        regex, kind = regex + ".*", "regexp"
                else:
                    regex, kind = regex + "(.*/)?", "regexp"
                if leading:  # "**/name": a literal suffix, unless a later wildcard makes it a regexp
                    kind = "suffix"
                continue
            if char == "*":
                regex, kind = regex + "[^/]*", "regexp"
            elif char == "?":
                regex, kind = regex + "[^/]", "regexp"
            elif char in ".+()|{}$^":
                regex += "\\" + char
            elif char == "\\" and i + 1 < len(chars):
                i += 1
                regex, kind = regex + re.escape(chars[i]), "regexp"
            elif char in "[]":
                regex, kind = regex + char, "regexp"
            else:
                regex += char
            i += 1
        compiled = re.compile(regex + "$") if kind == "regexp" else None
        return cls(pattern, reinclude, kind, compiled)

    def matches(self, path: str) -> bool:
        """Whether the slash-separated context path matches this pattern itself (not its parents)."""
        if self.kind == "exact":
            return path == self.pattern
        if self.kind == "prefix":
            return path.startswith(self.pattern[:-2])
        if self.kind == "suffix":
            suffix = self.pattern[2:]
            return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        assert self.regex is not None
        return self.regex.match(path) is not None

    def matches_or_parent_matches(self, path: str) -> bool:
        if self.matches(path):
            return True
        parts = path.split("/")[:-1]
        return any(self.matches("/".join(parts[: n + 1])) for n in range(len(parts)))


def read_dockerignore(text: str) -> list[IgnorePattern]:
    """The patterns of a .dockerignore: `#` lines are comments, blank lines skipped, lines trimmed."""
    patterns = []
    for raw in text.lstrip("\ufeff").splitlines():
        if raw.startswith("#"):
            continue
        line = raw.strip()
        if line in ("", "!"):
            if line == "!":
                raise DockerfileError('illegal exclusion pattern: "!"')
            continue
        patterns.append(IgnorePattern.compile(line))
    return patterns


def is_ignored(path: str, patterns: list[IgnorePattern]) -> bool:
    """Whether `docker build` leaves the context path out: the last pattern matching it decides."""
    ignored = False
    for pattern in patterns:
        if pattern.reinclude != ignored:
            continue  # only a re-include can change an ignored path, and only an exclude a kept one
        if pattern.matches_or_parent_matches(path):
            ignored = not pattern.reinclude
    return ignored


@dataclass(frozen=True)
class BuildContext:
    """The files (and directories) of `root` that `docker build root` sends, as relative POSIX paths."""

    root: Path
    files: frozenset[str]
    directories: frozenset[str]

    @classmethod
    def of(cls, root: Path) -> BuildContext:
        ignore = root / ".dockerignore"
        patterns = read_dockerignore(ignore.read_text()) if ignore.exists() else []
        reincludes = any(p.reinclude for p in patterns)
        files: set[str] = set()
        directories: set[str] = set()
        for current, dirnames, filenames in os.walk(root):
            relative_dir = Path(current).relative_to(root).as_posix()
            prefix = "" if relative_dir == "." else relative_dir + "/"
            kept_dirs = []
            for name in sorted(dirnames):
                path = prefix + name
                ignored = is_ignored(path, patterns)
                if (root / path).is_symlink():
                    if not ignored:
                        files.add(path)  # copied as the link itself, as Docker does
                    continue
                if not ignored:
                    directories.add(path)
                if not ignored or reincludes:  # without "!" lines nothing under it can come back
                    kept_dirs.append(name)
            dirnames[:] = kept_dirs
            files.update(prefix + name for name in filenames if not is_ignored(prefix + name, patterns))
        return cls(root, frozenset(files), frozenset(directories))

    def __contains__(self, path: str) -> bool:
        return path in self.files or path in self.directories

    def under(self, directory: str) -> tuple[list[str], list[str]]:
        """(files, directories) below the context directory `directory` ("." for the whole context),
        as paths relative to it."""
        if directory in (".", ""):
            return sorted(self.files), sorted(self.directories)
        prefix = directory + "/"
        return (
            sorted(f.removeprefix(prefix) for f in self.files if f.startswith(prefix)),
            sorted(d.removeprefix(prefix) for d in self.directories if d.startswith(prefix)),
        )
