"""Follow a Dockerfile's build stage for real, without a Docker engine, then run the image's entry points.

`build_and_check` does what `docker build` does for the stage `FROM ... AS build`, in a fresh
temporary directory standing for the image's root file system ("the root"), deleted afterwards:

- the context is the repository filtered by `.dockerignore` (`tests.dockerfile.BuildContext`);
- ARG, ENV, WORKDIR and COPY set the stage's variables, working directory and files;
- each RUN runs in order with `/bin/sh -c` (or the stage's SHELL), in the working directory, with
  the environment the Dockerfile has built up and nothing of the caller's except how this
  machine reaches the package registries (`PIP_*` settings, proxies, CA bundles) and pip's cache
  directory: the machine's, in place of the Dockerfile's PIP_NO_CACHE_DIR=1, which changes where
  pip keeps downloads, not what it installs.

What is mapped onto the root, and why: a test may not write to `/opt`, `/src`, `/tmp`, `/app` or
`/root` on the host, so these image directories, wherever ENV, WORKDIR, COPY or a RUN command
names them, become directories in the root; so does `/` itself in `cd /` and as a WORKDIR
(otherwise a step meant to run outside the sources would run in the host's `/`). Every other
absolute path in a command (`/bin/sh`, `/dev/null`) is the host's. The base image `python:X.Y-*`
is stood for by the host's Python X.Y (it must be that version), as `python`, `python3` and
`pythonX.Y` in `<root>/usr/local/bin`, first on PATH as in the official image.

Then, as the runtime stage would: only what it copies from the build stage (`COPY --from=build
/opt/venv /opt/venv`) is kept; the rest of the build stage's files, the sources in /src among
them, are deleted; the runtime ENV and WORKDIR apply; and the ENTRYPOINT runs with `--help`,
`sim --help`, `python -m order_execution.cli --help`, `python -m usdm_simulator --help` and an import of every
role's modules, each of which must come from the installed package. The runtime stage's RUN
(a `useradd`) is not executed: it would change the host's users.

Run against another Dockerfile (e.g. an older one) without pytest:
    .venv/bin/python -m tests.docker_build path/to/Dockerfile
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.dockerfile import (
    BuildContext,
    Dockerfile,
    DockerfileError,
    Instruction,
    Stage,
    env_pairs,
    expand,
    parse_dockerfile,
)

ROOT = Path(__file__).resolve().parents[1]
MAPPED_DIRECTORIES = ("opt", "src", "tmp", "app", "root")
# The modules each role (`order-execution <role>`) runs; `up` starts the others as
# `python -m order_execution.cli <role>`.
ROLE_MODULES: dict[str, tuple[str, ...]] = {
    "gateway": ("order_execution.gateway.server", "order_execution.runtime.logs"),
    "worker": ("order_execution.workers.process", "order_execution.launcher.processes"),
    "listener": ("order_execution.listener.process",),
    "dashboard": ("order_execution.cli.dashboard",),
    "sim": ("usdm_simulator.cli",),
    "up": ("order_execution.cli.up", "order_execution.launcher.stack"),
}
_MAPPED = re.compile(rf"(?<![\w./$-])/(?:{'|'.join(MAPPED_DIRECTORIES)})(?![\w.-])")
_CD_ROOT = re.compile(r"(?<![\w/-])cd /(?=[\s;&|)]|$)")
_PASSED_THROUGH = re.compile(
    r"^(?:PIP_(?!NO_CACHE_DIR$|CACHE_DIR$)\w+|(?i:https?_proxy|no_proxy)|SSL_CERT_FILE|SSL_CERT_DIR|REQUESTS_CA_BUNDLE)$"
)
_IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ROLES_COMMENT = re.compile(r"(?m)^#\s+(\w+(?:\s*\|\s*\w+)+)\s*$")


class BuildFailed(AssertionError):
    """A step failed as `docker build` would fail: which one (line, instruction), exit code, output."""


@dataclass(frozen=True)
class Root:
    """The temporary directory standing for the image's `/`."""

    path: Path

    def host(self, image_path: str) -> Path:
        """Where an absolute image path the build creates (WORKDIR, COPY) lives: in the root."""
        parts = Path(image_path).parts[1:]
        if parts and parts[0] not in MAPPED_DIRECTORIES:
            raise DockerfileError(
                f"{image_path}: outside {MAPPED_DIRECTORIES}; map it in tests/docker_build.py"
            )
        return self.path.joinpath(*parts)

    def rewrite(self, text: str) -> str:
        """Dockerfile text (a RUN command, an ENV value) with the mapped directories and `cd /` in it."""
        text = _MAPPED.sub(lambda m: str(self.path) + m.group(0), text)
        return _CD_ROOT.sub(f"cd {self.path}", text)


@dataclass
class StageState:
    """A stage's variables and working directory as its instructions so far have left them."""

    env: dict[str, str]
    args: dict[str, str]
    workdir: str = "/"
    shell: list[str] = field(default_factory=lambda: ["/bin/sh", "-c"])


@dataclass
class Report:
    """What the build did: seconds per RUN (by Dockerfile line) and the entry points' outputs."""

    run_seconds: dict[int, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    module_files: dict[str, str] = field(default_factory=dict)
    roles: list[str] = field(default_factory=list)
    venv: str = ""


def build_and_check(dockerfile_path: Path, context_root: Path = ROOT, *, budget_s: float = 900) -> Report:
    """Build `dockerfile_path`'s build stage from `context_root` and run the runtime's entry points.

    Raises BuildFailed (the failing step, its exit code and output) or DockerfileError (a
    Dockerfile this follower cannot follow). Temporary files are removed in every case.
    """
    dockerfile = parse_dockerfile(dockerfile_path.read_text())
    context = BuildContext.of(context_root)
    deadline = time.monotonic() + budget_s
    report = Report(roles=_roles(dockerfile_path.read_text()))
    with tempfile.TemporaryDirectory(prefix="docker-build-") as temporary:
        root = Root(Path(temporary))
        state = _build_stage(dockerfile, context, root, _machine_env(), deadline, report)
        del state  # the runtime stage starts from the base image again
        _check_runtime(dockerfile, root, deadline, report)
    return report


def _roles(text: str) -> list[str]:
    """The roles the Dockerfile's header names (`gateway | worker | ...`): the image's commands."""
    match = _ROLES_COMMENT.search(text)
    return [r.strip() for r in match.group(1).split("|")] if match else []


def _machine_env() -> dict[str, str]:
    """How this machine reaches the registries, and its pip cache (see the module's docstring)."""
    passed = {k: v for k, v in os.environ.items() if _PASSED_THROUGH.match(k)}
    found = subprocess.run(
        [sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True, timeout=60, check=False
    )
    cache = found.stdout.strip() if found.returncode == 0 else ""
    return {**passed, "PIP_CACHE_DIR": cache or str(Path.home() / ".cache" / "pip")}


def _base_env(root: Root) -> dict[str, str]:
    """The official python image's environment, its /usr/local/bin being the root's."""
    return {
        "PATH": f"{root.path}/usr/local/bin:{_IMAGE_PATH}",
        "LANG": "C.UTF-8",
        "HOME": str(root.path / "root"),
    }


def _stand_in_base_image(root: Root, base: str) -> None:
    """Put the host's Python where the python image has its own; it must be the image's version."""
    match = re.match(r"(?:docker\.io/)?(?:library/)?python:(\d+)\.(\d+)", base)
    if match is None:
        raise DockerfileError(f"base image {base!r}: only python:X.Y[-variant] is stood in for here")
    wanted = (int(match.group(1)), int(match.group(2)))
    if sys.version_info[:2] != wanted:
        raise BuildFailed(
            f"the image has Python {wanted}, this host {sys.version_info[:2]}: not the same build"
        )
    bin_dir = root.path / "usr" / "local" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    interpreter = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    for name in ("python", "python3", f"python{wanted[0]}.{wanted[1]}"):
        (bin_dir / name).symlink_to(interpreter)
    for name in MAPPED_DIRECTORIES:
        (root.path / name).mkdir(exist_ok=True)


def _build_stage(
    dockerfile: Dockerfile,
    context: BuildContext,
    root: Root,
    machine_env: Mapping[str, str],
    deadline: float,
    report: Report,
) -> StageState:
    stage = dockerfile.stage("build")
    _stand_in_base_image(root, stage.base)
    state = StageState(env=_base_env(root), args=dict(dockerfile.global_args))
    for instruction in stage.instructions:
        where = f"Dockerfile line {instruction.line}: {instruction.keyword} {instruction.arguments}"
        if instruction.keyword in ("ARG", "ENV", "WORKDIR", "SHELL"):
            _apply(instruction, state, root)
        elif instruction.keyword == "COPY":
            _copy(instruction, state, context, root, where)
        elif instruction.keyword == "RUN":
            started = time.monotonic()
            _run(instruction, state, root, machine_env, deadline, where)
            report.run_seconds[instruction.line] = round(time.monotonic() - started, 1)
        elif instruction.keyword not in ("LABEL", "EXPOSE", "USER", "CMD", "ENTRYPOINT", "STOPSIGNAL"):
            raise DockerfileError(f"{where}: not followed by this test")
    return state


def _apply(instruction: Instruction, state: StageState, root: Root) -> None:
    """ARG, ENV, WORKDIR or SHELL: the stage's variables, working directory or shell."""
    if instruction.keyword == "ARG":
        name, _, default = instruction.arguments.partition("=")
        state.args[name.strip()] = state.args.get(name.strip(), default.strip())
    elif instruction.keyword == "ENV":
        # Mapped before expansion: values already in the environment point into the root.
        state.env.update(env_pairs(root.rewrite(instruction.arguments), {**state.args, **state.env}))
    elif instruction.keyword == "WORKDIR":
        state.workdir = _join(state.workdir, expand(instruction.arguments, {**state.args, **state.env}))
        root.host(state.workdir).mkdir(parents=True, exist_ok=True)
    else:
        shell = instruction.exec_form()
        if not shell:
            raise DockerfileError(f"line {instruction.line}: SHELL takes a JSON array")
        state.shell = shell


def _join(current: str, path: str) -> str:
    return os.path.normpath(path if path.startswith("/") else f"{current.rstrip('/')}/{path}")


def _copy(instruction: Instruction, state: StageState, context: BuildContext, root: Root, where: str) -> None:
    """COPY from the context: a file to a file or into a directory, a directory's contents, `.`."""
    flags, words = instruction.flags_and_words()
    if "from" in flags or len(words) < 2:
        raise DockerfileError(f"{where}: the build stage copies from the context only")
    *sources, destination = (expand(w, {**state.args, **state.env}) for w in words)
    target = _join(state.workdir, destination)
    into_directory = destination.endswith("/") or destination == "." or len(sources) > 1
    for source in sources:
        if any(c in source for c in "*?["):
            raise DockerfileError(f"{where}: wildcards in COPY are not followed by this test")
        relative = os.path.normpath(source.lstrip("/"))
        if relative == "." or relative in context.directories:
            files, directories = context.under(relative)
            for directory in directories:
                root.host(_join(target, directory)).mkdir(parents=True, exist_ok=True)
        elif relative in context.files:
            files = [""]
        else:
            raise BuildFailed(f"{where}\n{source!r}: not found in the build context (see .dockerignore)")
        for file in files:
            from_path = context.root / relative / file if file else context.root / relative
            name = file or (os.path.basename(relative) if into_directory else "")
            to_path = root.host(_join(target, name) if name else target)
            to_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(from_path, to_path, follow_symlinks=False)


def _run(
    instruction: Instruction,
    state: StageState,
    root: Root,
    machine_env: Mapping[str, str],
    deadline: float,
    where: str,
) -> None:
    exec_form = instruction.exec_form()
    if exec_form:
        command = [root.rewrite(word) for word in exec_form]
    else:
        command = [*state.shell, root.rewrite(instruction.arguments)]
    env = {**machine_env, **state.env}
    env.pop("PIP_NO_CACHE_DIR", None)  # the machine's cache instead (module docstring)
    _execute(command, root.host(state.workdir), env, deadline, where)


def _execute(command: list[str], cwd: Path, env: Mapping[str, str], deadline: float, where: str) -> str:
    """Run `command`; its output, or BuildFailed with the exit code and the output's last lines."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise BuildFailed(f"{where}\nnot started: the build's time is up")
    try:
        done = subprocess.run(
            command,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=remaining,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BuildFailed(f"{where}\nstill running when the build's time ran out") from exc
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        tail = "\n".join(output.splitlines()[-25:])
        raise BuildFailed(f"{where}\nexited {done.returncode}; its last output:\n{tail}")
    return output


def _check_runtime(dockerfile: Dockerfile, root: Root, deadline: float, report: Report) -> None:
    """The runtime stage: keep what it copies from the build, apply its ENV/WORKDIR, run its entry points."""
    stage = dockerfile.stages[-1]
    kept = _copied_from_build(stage)
    _remove_all_but(root, kept)
    state = StageState(env=_base_env(root), args=dict(dockerfile.global_args))
    for instruction in stage.instructions:
        if instruction.keyword in ("ARG", "ENV", "WORKDIR"):
            _apply(instruction, state, root)
    entrypoints = stage.of("ENTRYPOINT")
    command = entrypoints[-1].exec_form() if entrypoints else None
    if not command:
        raise DockerfileError("the runtime stage needs an ENTRYPOINT in exec form")
    report.venv = str(root.host(kept[0]))
    cwd = root.host(state.workdir)
    imports = sorted({m for modules in ROLE_MODULES.values() for m in modules} | _imported_by_cli_main())
    probe = "import importlib\n" + "".join(
        f"print({m!r}, importlib.import_module({m!r}).__file__)\n" for m in imports
    )
    checks = {
        "order-execution --help": [*command, "--help"],
        "order-execution sim --help": [*command, "sim", "--help"],
        "python -m order_execution.cli --help": ["python", "-m", "order_execution.cli", "--help"],
        "python -m usdm_simulator --help": ["python", "-m", "usdm_simulator", "--help"],
        "role modules": ["python", "-c", probe],
    }
    for name, argv in checks.items():
        report.outputs[name] = _execute(argv, cwd, state.env, deadline, f"runtime stage: {name} (in {cwd})")
    for line in report.outputs["role modules"].splitlines():
        module, _, path = line.partition(" ")
        report.module_files[module] = path


def _copied_from_build(stage: Stage) -> list[str]:
    """The paths the runtime stage copies from the build stage; each must keep its path (a venv does)."""
    kept = []
    for instruction in stage.of("COPY"):
        flags, words = instruction.flags_and_words()
        if flags.get("from") != "build":
            raise DockerfileError(f"line {instruction.line}: the runtime stage copies only from the build")
        if len(words) != 2 or words[0] != words[1]:
            raise DockerfileError(f"line {instruction.line}: a venv works only at the path it was built at")
        kept.append(words[0])
    if not kept:
        raise DockerfileError("the runtime stage copies nothing from the build stage")
    return kept


def _remove_all_but(root: Root, kept_image_paths: list[str]) -> None:
    """Delete the build stage's files in the mapped directories but the kept paths (and parents)."""
    kept = [root.host(p) for p in kept_image_paths]
    for top in MAPPED_DIRECTORIES:
        _prune(root.path / top, kept)


def _prune(directory: Path, kept: list[Path]) -> None:
    for child in list(directory.iterdir()):
        if child in kept:
            continue
        if any(child in k.parents for k in kept):
            _prune(child, kept)
        elif child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _imported_by_cli_main() -> set[str]:
    """Every project module `cli/main.py` imports, lazily or not: the entry point's own reach."""
    tree = ast.parse((ROOT / "cli" / "main.py").read_text())
    ours = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    modules = {"order_execution.cli.main"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ours:
            modules.add(node.module)
    return modules


def main(argv: list[str]) -> int:
    """`python -m tests.docker_build [Dockerfile]`: follow it, print the failure or the timings."""
    path = Path(argv[0]) if argv else ROOT / "deploy" / "Dockerfile"
    started = time.monotonic()
    try:
        report = build_and_check(path)
    except (BuildFailed, DockerfileError) as exc:
        print(f"FAILED after {time.monotonic() - started:.0f} s: {exc}")
        return 1
    print(
        f"built and checked in {time.monotonic() - started:.0f} s; RUN seconds by line: {report.run_seconds}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
