"""Settings: YAML file, ${VAR} expansion, environment overrides, errors naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from order_execution.runtime.settings import SettingsError, load_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "BINANCE_API_KEY",
        "BINANCE_SECRET_KEY",
        "BINANCE_TESTNET",
        "BINANCE_BASE_URL",
        "REDIS_ADDRESS",
        "REDIS_PASSWORD",
        "NATS_ADDRESS",
        "LOG_LEVEL",
        "LOG_FORMAT",
        "ORDER_EXECUTION_CONFIG",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray ./config.yaml


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_match_the_original_service() -> None:
    s = load_settings()
    assert (s.server.grpc_port, s.server.http_port) == (50051, 9091)
    assert s.redis.address == "localhost:6379" and s.nats.address == "nats://localhost:4222"
    assert s.logging.level == "info" and s.logging.format == "json"


def test_file_values_and_var_expansion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "abc123")
    path = write(
        tmp_path,
        """
server: {grpc_port: 6000}
exchange: {api_key: "${MY_KEY}", secret_key: "${MISSING_SECRET:-fallback}", base_url: "http://127.0.0.1:8090/"}
symbols: [ETHUSDT]
""",
    )
    s = load_settings(path)
    assert s.server.grpc_port == 6000
    assert s.exchange.api_key.get_secret_value() == "abc123"
    assert s.exchange.secret_key.get_secret_value() == "fallback"
    assert s.exchange.rest_url == "http://127.0.0.1:8090"
    assert s.symbols == ["ETHUSDT"]


def test_seed_environment_names_override_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "redis: {address: 'file-host:6379'}\nlogging: {level: debug}\n")
    monkeypatch.setenv("REDIS_ADDRESS", "env-host:6380")
    monkeypatch.setenv("LOG_LEVEL", "error")
    monkeypatch.setenv("BINANCE_API_KEY", "k-from-env")
    s = load_settings(path)
    assert s.redis.address == "env-host:6380"
    assert s.redis.url == "redis://env-host:6380/0"
    assert s.logging.level == "error"
    assert s.exchange.api_key.get_secret_value() == "k-from-env"


def test_nested_environment_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "server: {http_port: 7000}\n")
    monkeypatch.setenv("ORDER_EXECUTION__SERVER__HTTP_PORT", "7100")
    assert load_settings(path).server.http_port == 7100


def test_symbols_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "symbols: [BTCUSDT]\n")
    monkeypatch.setenv("ORDER_EXECUTION__SYMBOLS", '["BTCUSDT", "DOGEUSDT", "ARBUSDT"]')
    assert load_settings(path).symbols == ["BTCUSDT", "DOGEUSDT", "ARBUSDT"]
    monkeypatch.setenv("ORDER_EXECUTION__SYMBOLS", "BTCUSDT,DOGEUSDT")
    with pytest.raises(SettingsError, match="symbols"):
        load_settings(path)


def test_config_env_var_chooses_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "other.yaml"
    path.write_text("worker: {max_order_age_ms: 1234}\n")
    monkeypatch.setenv("ORDER_EXECUTION_CONFIG", str(path))
    assert load_settings().worker.max_order_age_ms == 1234


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("server: {grpc_port: abc}", "server.grpc_port"),
        ("server: {grpc_port: 70000}", "server.grpc_port"),
        ("logging: {level: loud}", "logging.level"),
        ("exchange: {recv_window_ms: 90000}", "exchange.recv_window_ms"),
        ("server: {grpc_prot: 1}", "server.grpc_prot"),
        ("nonsense: 1", "nonsense"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, yaml_text: str, key: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(write(tmp_path, yaml_text))
    assert f"  {key}: " in str(caught.value)
    assert "config.yaml" in str(caught.value)


def test_bad_environment_value_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(SettingsError, match=r"logging\.format: .*got 'xml'"):
        load_settings()


def test_missing_explicit_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"copy config\.example\.yaml"):
        load_settings(tmp_path / "nope.yaml")


def test_invalid_yaml_is_reported(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(write(tmp_path, "server: [unclosed"))


def test_example_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).resolve().parents[2] / "config.example.yaml"
    s = load_settings(example)
    assert s.symbols == ["BTCUSDT", "ETHUSDT"]


# The README's own examples, and the seed's names, as a user may have them exported.
USER_EXPORTS = {
    "ORDER_EXECUTION__SERVER__GRPC_PORT": "6000",
    "ORDER_EXECUTION__SERVER__HTTP_PORT": "6001",
    "ORDER_EXECUTION__SYMBOLS": '["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"]',
    "ORDER_EXECUTION__LOGGING__LEVEL": "debug",
    "ORDER_EXECUTION_CONFIG": "/nonexistent/config.yaml",
    "REDIS_ADDRESS": "elsewhere:6390",
    "NATS_ADDRESS": "nats://elsewhere:4333",
    "BINANCE_API_KEY": "exported-key",
    "LOG_FORMAT": "text",
}


def test_the_suite_ignores_exported_settings() -> None:
    """These settings tests pass with the user's variables exported (tests/conftest.py)."""
    env = {**os.environ, **USER_EXPORTS, "PYTEST_ADDOPTS": ""}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "not exported"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
