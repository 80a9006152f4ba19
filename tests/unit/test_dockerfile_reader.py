"""tests/dockerfile.py reads Dockerfiles and .dockerignore as Docker does, and tests/docker_build.py
maps the image's paths as its docstring says: the build test is only as true as these are.

The .dockerignore cases are Docker's documented behaviour (docs.docker.com, "Build context":
Go filepath.Match rules, `**`, `!` exceptions, the last matching line wins).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docker_build import Root
from tests.dockerfile import (
    BuildContext,
    DockerfileError,
    env_pairs,
    expand,
    is_ignored,
    parse_dockerfile,
    read_dockerignore,
)


@pytest.mark.parametrize(
    ("patterns", "path", "ignored"),
    [
        ("tests", "tests/unit/test_x.py", True),  # a directory takes everything under it
        ("tests", "orders/tests/x.py", False),  # a plain name is anchored at the context's root
        ("/tests", "tests/x.py", True),  # a leading slash changes nothing
        ("*.egg-info", "order_execution.egg-info/PKG-INFO", True),
        ("*.egg-info", "sub/x.egg-info/PKG-INFO", False),  # `*` never crosses a slash
        ("**/__pycache__", "__pycache__/x.pyc", True),  # `**` matches zero directories too
        ("**/__pycache__", "orders/deep/__pycache__/x.pyc", True),
        ("**/__pycache__", "orders/not__pycache__/x.py", False),
        ("**/*.pyc", "a/b/c.pyc", True),
        ("proto/*_pb2*.py", "proto/order_pb2_grpc.py", True),
        ("proto/*_pb2*.py", "proto/order.proto", False),
        ("docs/**", "docs", False),  # `dir/**` is what is below it, not the directory itself
        ("docs/**", "docs/a/b.md", True),
        ("file?.txt", "file1.txt", True),
        ("file?.txt", "file10.txt", False),
        ("docs\n!docs/keep.md", "docs/keep.md", False),  # an exception re-includes
        ("docs\n!docs/keep.md", "docs/other.md", True),
        ("!docs/keep.md\ndocs", "docs/keep.md", True),  # the last matching line wins
        ("# tests\n\n  ", "tests/x.py", False),  # comments and blank lines are nothing
    ],
)
def test_dockerignore_patterns_mean_what_docker_means(patterns: str, path: str, ignored: bool) -> None:
    assert is_ignored(path, read_dockerignore(patterns)) is ignored


def test_the_context_is_the_directory_filtered_by_its_dockerignore(tmp_path: Path) -> None:
    for name in ("a.py", "pkg/b.py", "pkg/__pycache__/b.pyc", "tests/t.py", "docs/keep.md", "docs/x.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    (tmp_path / ".dockerignore").write_text("**/__pycache__\ntests\ndocs\n!docs/keep.md\n")
    context = BuildContext.of(tmp_path)
    assert context.files == {".dockerignore", "a.py", "pkg/b.py", "docs/keep.md"}
    assert context.under("pkg") == (["b.py"], [])


def test_dockerfile_lines_join_at_backslashes_and_drop_comments() -> None:
    dockerfile = parse_dockerfile(
        "ARG BASE=python:3.11-slim\n"
        "# a comment\n"
        "FROM ${BASE} AS build\n"
        "RUN one \\\n"
        "# a comment inside the continuation\n"
        " && two\n"
        'ENV A=1 B="x y"\n'
        "FROM $BASE\n"
        "COPY --from=build /opt/venv /opt/venv\n"
    )
    build, runtime = dockerfile.stages
    assert (build.base, build.name, runtime.base, runtime.name) == (
        "python:3.11-slim",
        "build",
        "python:3.11-slim",
        None,
    )
    [run] = build.of("RUN")
    assert run.arguments == "one  && two" and run.line == 4
    assert runtime.of("COPY")[0].flags_and_words() == ({"from": "build"}, ["/opt/venv", "/opt/venv"])
    with pytest.raises(DockerfileError, match="unknown instruction"):
        parse_dockerfile("FROM x\nRUNN y\n")


def test_env_values_expand_from_the_environment_before_them() -> None:
    env = {"PATH": "/usr/bin", "EMPTY": ""}
    assert env_pairs("PATH=/opt/venv/bin:$PATH", env) == {"PATH": "/opt/venv/bin:/usr/bin"}
    assert env_pairs("A=\"x y\" B='$PATH' C=${EMPTY:-d}", env) == {"A": "x y", "B": "$PATH", "C": "d"}
    assert env_pairs("LEGACY some words", env) == {"LEGACY": "some words"}
    assert expand("${PATH:+set}${NONE:+set}$NONE", env) == "set"


def test_the_build_maps_the_image_directories_and_cd_root_and_nothing_else(tmp_path: Path) -> None:
    root = Root(tmp_path)
    command = 'python -m venv /opt/venv > /tmp/x && cd / && /bin/sh -c "ls /srcx /src/a" > /dev/null'
    assert root.rewrite(command) == (
        f"python -m venv {tmp_path}/opt/venv > {tmp_path}/tmp/x && cd {tmp_path} && "
        f'/bin/sh -c "ls /srcx {tmp_path}/src/a" > /dev/null'
    )
    assert root.host("/src") == tmp_path / "src" and root.host("/") == tmp_path
    with pytest.raises(DockerfileError, match="outside"):
        root.host("/usr/share/app")
