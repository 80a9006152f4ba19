"""config.example.yaml is checked against the settings (runtime/settings.py, runtime/settings_*.py).

What `problems_in` checks:
- every key of the example is a setting (no stale key) and every setting is in the example, at every
  depth (`server.tls.cert_file` too);
- every value is the setting's default, unless its comment starts with `example (default: <YAML>)`:
  a value shown to illustrate, with the real default beside it. Such a value must differ from the
  default, and <YAML> must be the default;
- a secret (a SecretStr setting) is "" or a bare `${VAR}`, never a literal, and a `${VAR}` anywhere
  names the variable the settings read for that very key;
- the header's table of flat environment names (`BINANCE_API_KEY  exchange.api_key`) is exactly the
  settings' table, and every other such name the file mentions (`ORDER_EXECUTION__REDIS__SENTINELS`)
  is one the settings read;
- a setting with fixed choices (`logging.format`) has a comment that starts with them (`json | text`),
  each one accepted;
- a list of records (`auth.clients`) is followed by a commented-out entry with exactly its fields.

Exempt, and why: the entries of lists and mappings (`auth.clients`, `risk.max_position_quantity`,
`symbols`) are not walked key by key: no entry is a default to restate, and the example gives the
default itself (`[]`, `{}`, the two symbols). The commented-out client is checked for its keys only: its
values are placeholders (a key_sha256 that is no hash, on purpose). Secrets are not exempt: the example
shows each one, empty or as `${VAR}`, so a reader sees where it goes.

The flat names come from `runtime.settings._SEED_ENV`, a private table: it is the one place that says
which names are read, so this test reads it rather than keep a copy that could drift in turn.
"""

from __future__ import annotations

import os
import re
from itertools import takewhile
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel, SecretStr, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from order_execution.runtime import settings as settings_module
from order_execution.runtime.settings import CONFIG_ENV, Settings, SettingsError, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"
FLAT_NAMES = {name: f"{section}.{key}" for name, (section, key) in settings_module._SEED_ENV.items()}

_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[a-z_][a-z0-9_]*):(?P<rest>.*)$")
_TAG = re.compile(r"^example \(default: (?P<default>[^)]*)\)")
_CHOICES = re.compile(r"^[\w-]+(?: \| [\w-]+)+")
_HEADER_ROW = re.compile(r"^#\s+(?P<name>[A-Z][A-Z0-9_]*)\s+(?P<key>[a-z_]+\.[a-z_]+)\s*$")
_ENV_NAME = re.compile(r"\b(?:ORDER_EXECUTION|BINANCE|REDIS|NATS|LOG)_[A-Z0-9_]*[A-Z0-9]\b")
_REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<default>:-[^}]*)?\}")


@pytest.fixture(autouse=True)
def _no_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults only: no exported setting, and no file remembered by an earlier load_settings."""
    for name in [*FLAT_NAMES, CONFIG_ENV]:
        monkeypatch.delenv(name, raising=False)
    for name in [n for n in os.environ if n.startswith("ORDER_EXECUTION__")]:
        monkeypatch.delenv(name)
    # load_settings remembers the file it read for later Settings() calls; restored after the test.
    monkeypatch.setattr(settings_module._YamlSource, "path", None)


def setting_fields(model: type[BaseModel] = Settings, prefix: str = "") -> dict[str, FieldInfo]:
    """Every setting as dotted path -> field, sections walked (a section's own path is not listed)."""
    found: dict[str, FieldInfo] = {}
    for name, field in model.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            found |= setting_fields(section, f"{prefix}{name}.")
        else:
            found[prefix + name] = field
    return found


FIELDS = setting_fields()


def default_of(path: str) -> Any:
    """The default of a dotted setting path, read from the fields (no source is consulted)."""
    first, *rest = path.split(".")
    value = Settings.model_fields[first].get_default(call_default_factory=True)
    for part in rest:
        value = getattr(value, part)
    return value


def value_at(settings: BaseModel, path: str) -> Any:
    """The value of a dotted setting path in loaded `settings`."""
    value: Any = settings
    for part in path.split("."):
        value = getattr(value, part)
    return value


def yaml_leaves(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted path -> value of every key the YAML gives, mappings of sections walked."""
    found: dict[str, Any] = {}
    for key, value in data.items():
        path = prefix + str(key)
        if isinstance(value, dict) and path not in FIELDS:
            found |= yaml_leaves(value, path + ".")
        else:
            found[path] = value
    return found


def key_comments(text: str) -> dict[str, str]:
    """Dotted path -> the comment on its line ("" if none), for every key line (sections included).

    Reads lines by indentation; `problems_in` checks that it sees the same keys as the YAML parser.
    """
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        match = _KEY_LINE.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        found[".".join(key for _, key in stack)] = match["rest"].partition(" #")[2].strip()
    return found


def problems_in(path: Path) -> list[str]:
    """Every way the example at `path` disagrees with the settings, one line each (module docstring)."""
    text = path.read_text()
    given = yaml_leaves(yaml.safe_load(text))
    comments = key_comments(text)
    problems = [f"{key}: not a setting" for key in given if key not in FIELDS]
    problems += [f"{key}: missing from the example" for key in FIELDS if key not in given]
    sections = {".".join(key.split(".")[:depth]) for key in given for depth in range(1, key.count(".") + 1)}
    if set(comments) != set(given) | sections:
        problems.append(f"key lines read {sorted(set(comments) ^ (set(given) | sections))} unlike YAML")
    try:
        loaded: Settings | None = load_settings(path)
    except SettingsError as exc:
        problems.append(f"does not load: {exc}")
        loaded = None
    for key, raw in given.items():
        if key in FIELDS:
            problems += _value_problems(key, raw, comments.get(key, ""), loaded)
    problems += _env_name_problems(text)
    problems += _record_list_problems(text)
    return problems


def _value_problems(key: str, raw: Any, comment: str, loaded: Settings | None) -> list[str]:
    field, default = FIELDS[key], default_of(key)
    problems = []
    references = _REFERENCE.findall(raw) if isinstance(raw, str) else []
    problems += [
        f"{key}: ${{{name}}} is not the variable the settings read for {key}"
        for name, _ in references
        if FLAT_NAMES.get(name) != key
    ]
    if field.annotation is SecretStr and raw != "" and not re.fullmatch(r"\$\{[A-Za-z0-9_]+\}", str(raw)):
        problems.append(f"{key}: a secret must be empty or a bare ${{VAR}}, never a literal")
    if get_origin(field.annotation) is Literal:
        choices = _CHOICES.match(comment)
        if not choices:
            problems.append(f"{key}: its comment must start with its choices (a | b)")
        else:
            accepted = get_args(field.annotation)
            problems += [
                f"{key}: {c!r} is not a choice" for c in choices[0].split(" | ") if c not in accepted
            ]
    tag = _TAG.match(comment)
    if tag:
        try:
            annotation: Any = field.annotation
            stated = TypeAdapter(annotation).validate_python(yaml.safe_load(tag["default"]))
        except (ValidationError, yaml.YAMLError):
            stated = None
        if stated != default:
            problems.append(f"{key}: the comment states default {tag['default']}, the default is {default!r}")
    if loaded is None:
        return problems
    is_default = value_at(loaded, key) == default
    if tag and is_default:
        problems.append(f"{key}: marked as an example but is the default; drop the tag")
    elif not tag and not is_default:
        shown = "its value" if field.annotation is SecretStr else repr(raw)  # never echo a secret
        problems.append(
            f"{key}: {shown} is not the default {default!r}; restore it, or mark a deliberate example "
            "with a comment that starts `example (default: ...)`"
        )
    return problems


def _env_name_problems(text: str) -> list[str]:
    header = takewhile(lambda line: line.startswith("#") or not line.strip(), text.splitlines())
    table = {m["name"]: m["key"] for line in header if (m := _HEADER_ROW.match(line))}
    problems = [f"header: {n} missing (sets {k})" for n, k in FLAT_NAMES.items() if n not in table]
    problems += [
        f"header: {n} sets {k}, not {table[n]}" for n, k in FLAT_NAMES.items() if table.get(n, k) != k
    ]
    problems += [f"header: {n} is not read by the settings" for n in table if n not in FLAT_NAMES]
    prefixed = {"ORDER_EXECUTION__" + "__".join(p.upper().split(".")) for p in FIELDS} | {
        "ORDER_EXECUTION__" + p.partition(".")[0].upper() for p in FIELDS
    }
    known = {*FLAT_NAMES, CONFIG_ENV, "ORDER_EXECUTION__SECTION__KEY", *prefixed}
    unknown = sorted(set(_ENV_NAME.findall(text)) - known)
    problems += [f"{name}: not a variable the settings read" for name in unknown]
    return problems


def _record_list_problems(text: str) -> list[str]:
    """A list of records (list[SomeModel]) is followed by a commented-out entry with all its fields."""
    problems = []
    lines = text.splitlines()
    for key, field in FIELDS.items():
        item = get_args(field.annotation)[0] if get_origin(field.annotation) is list else None
        if not (isinstance(item, type) and issubclass(item, BaseModel)):
            continue
        leaf = key.rpartition(".")[2]
        start = next((i for i, line in enumerate(lines) if line.lstrip().startswith(f"{leaf}:")), None)
        if start is None:
            continue  # reported as missing
        block = []
        for line in lines[start + 1 :]:
            if not line.lstrip().startswith("#"):
                break
            block.append(line.lstrip()[2:])
        entries = yaml.safe_load("\n".join(block)) if block else None
        shown = set(entries[0]) if isinstance(entries, list) and entries else set()
        fields = set(item.model_fields)
        if shown != fields:
            problems.append(f"{key}: the commented entry shows {sorted(shown)}, not {sorted(fields)}")
    return problems


def test_the_example_matches_the_settings() -> None:
    assert problems_in(EXAMPLE) == []


def mutated(tmp_path: Path, pattern: str, replacement: str) -> Path:
    text, count = re.subn(pattern, replacement, EXAMPLE.read_text(), count=1, flags=re.MULTILINE)
    assert count == 1, f"{pattern!r} is not in config.example.yaml"
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("pattern", "replacement", "expected"),
    [
        pytest.param(r"^  grpc_port:", "  grpc_prot:", "server.grpc_prot: not a setting", id="stale key"),
        pytest.param(
            r"^  grpc_port: .*\n", "", "server.grpc_port: missing from the example", id="missing key"
        ),
        pytest.param(
            r"^  max_streams: 500 ",
            "  max_streams: 400 ",
            "max_streams: 400 is not the default 500",
            id="value",
        ),
        pytest.param(
            r"^  max_streams: 500 +# ",
            "  max_streams: 500  # example (default: 500); ",
            "is the default; drop",
            id="tag on the default",
        ),
        pytest.param(
            r"^  max_streams: 500 +# ",
            "  max_streams: 400  # example (default: 300); ",
            "states default 300",
            id="tag states a wrong default",
        ),
        pytest.param(
            r'^  password: ""', '  password: "in-clear"', "a secret must be empty", id="literal secret"
        ),
        pytest.param(
            r"\$\{REDIS_ADDRESS:", "${NATS_ADDRESS:", "${NATS_ADDRESS} is not the variable", id="${VAR}"
        ),
        pytest.param(r"^#   BINANCE_BASE_URL .*\n", "", "header: BINANCE_BASE_URL missing", id="header row"),
        pytest.param(
            r"^#   LOG_FORMAT +logging.format",
            "#   LOG_FORMAT  logging.level",
            "LOG_FORMAT sets logging.format",
            id="header key",
        ),
        pytest.param(r"__SERVER__GRPC_PORT", "__SERVER__GRPC", "SERVER__GRPC: not a variable", id="env name"),
        pytest.param(r"# json \| text", "# json | xml", "logging.format: 'xml' is not a choice", id="choice"),
        pytest.param(
            r"^  #   admin: false.*\n", "", "auth.clients: the commented entry", id="commented client"
        ),
    ],
)
def test_each_check_finds_its_fault(tmp_path: Path, pattern: str, replacement: str, expected: str) -> None:
    found = problems_in(mutated(tmp_path, pattern, replacement))
    assert any(expected in problem for problem in found), found


def test_a_marked_example_value_passes(tmp_path: Path) -> None:
    path = mutated(tmp_path, r"^  max_streams: 500 +# ", "  max_streams: 400  # example (default: 500); ")
    assert problems_in(path) == []
    assert load_settings(path).server.max_streams == 400


def test_the_environment_overrides_as_the_header_says(monkeypatch: pytest.MonkeyPatch) -> None:
    """ORDER_EXECUTION__SECTION__KEY beats the file; a flat name beats both."""
    monkeypatch.setenv("ORDER_EXECUTION__SERVER__GRPC_PORT", "6000")
    monkeypatch.setenv("ORDER_EXECUTION__LOGGING__LEVEL", "debug")
    monkeypatch.setenv("LOG_LEVEL", "error")
    settings = load_settings(EXAMPLE)
    assert (settings.server.grpc_port, settings.logging.level) == (6000, "error")
