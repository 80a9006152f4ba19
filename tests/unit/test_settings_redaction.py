"""A settings error names the key and never echoes a secret's value."""

from __future__ import annotations

from pathlib import Path

import pytest

from order_execution.runtime.settings import SettingsError, load_settings

SECRET = "sk-live-9f8e7d6c5b4a39281706f5e4d3c2b1a0"


@pytest.fixture(autouse=True)
def _no_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ORDER_EXECUTION_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


def error_of(tmp_path: Path, yaml_text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml_text)
    with pytest.raises(SettingsError) as caught:
        load_settings(path)
    return str(caught.value)


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        (f"exchange: {{secret_key: [{SECRET}]}}", "exchange.secret_key"),  # wrong type for a SecretStr
        (f"exchange: {{api_key: {{nested: {SECRET}}}}}", "exchange.api_key"),
        (f"redis: {{password: [{SECRET}]}}", "redis.password"),
        (f"exchange: {{secret_kye: {SECRET}}}", "exchange.secret_kye"),  # a mistyped key name
        (f"exchange: {{scret: {SECRET}}}", "exchange.scret"),  # unknown key, name says nothing
        (f"monitoring: {{api_token: {SECRET}}}", "monitoring.api_token"),
    ],
)
def test_secret_values_are_hidden_and_the_key_named(tmp_path: Path, yaml_text: str, key: str) -> None:
    message = error_of(tmp_path, yaml_text)
    assert f"  {key}: " in message
    assert SECRET not in message
    assert "value hidden" in message or "valid string" in message  # a mapping is never quoted


def test_secret_from_the_environment_is_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDER_EXECUTION__EXCHANGE__SECRET_KYE", SECRET)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "exchange.secret_kye" in str(caught.value) and SECRET not in str(caught.value)


def test_ordinary_values_are_still_quoted(tmp_path: Path) -> None:
    assert "(got 'xml')" in error_of(tmp_path, "logging: {format: xml}")


def test_a_yaml_syntax_error_does_not_quote_the_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, f'exchange:\n  secret_key: "{SECRET}\n  api_key: [x\n')
    assert "not valid YAML" in message and "line" in message
    assert SECRET not in message
