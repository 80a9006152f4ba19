"""redis.sentinels, master_name, sentinel_password and the replica-ack settings: defaults,
validation naming the entry, the environment form, and the sentinel password masked."""

from __future__ import annotations

from pathlib import Path

import pytest

from order_execution.runtime.settings import RedisSettings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def no_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ORDER_EXECUTION_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no stray ./config.yaml


def test_defaults_keep_a_single_redis() -> None:
    settings = RedisSettings()
    assert settings.sentinels == []
    assert settings.master_name == "order-execution"
    assert settings.sentinel_password.get_secret_value() == ""
    assert settings.min_replica_acks == 0
    assert settings.replica_ack_timeout_ms == 500


def test_sentinel_addresses_are_host_port_pairs() -> None:
    settings = RedisSettings(sentinels=["127.0.0.1:26379", "sentinel-b:26380", "[::1]:26381"])
    assert settings.sentinel_addresses == [
        ("127.0.0.1", 26379),
        ("sentinel-b", 26380),
        ("::1", 26381),
    ]


@pytest.mark.parametrize("bad", ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", ":26379", "h:port"])
def test_a_bad_sentinel_address_is_refused_naming_it(bad: str) -> None:
    with pytest.raises(ValueError, match=r"redis\.sentinels #2 .*host:port"):
        RedisSettings(sentinels=["127.0.0.1:26379", bad])


@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_master_name_is_refused(blank: str) -> None:
    with pytest.raises(ValueError, match="master_name"):
        RedisSettings(master_name=blank)


def test_negative_replica_acks_are_refused() -> None:
    with pytest.raises(ValueError, match="min_replica_acks"):
        RedisSettings(min_replica_acks=-1)


def test_a_replica_ack_wait_must_end_before_the_socket_timeout() -> None:
    """Else the client gives up first and the answer no longer names the client id to retry with."""
    with pytest.raises(
        ValueError, match=r"replica_ack_timeout_ms \(1000\) must be below .*socket_timeout_ms"
    ):
        RedisSettings(min_replica_acks=1, replica_ack_timeout_ms=1000, socket_timeout_ms=1000)
    assert RedisSettings(min_replica_acks=1, replica_ack_timeout_ms=500).min_replica_acks == 1
    assert RedisSettings(min_replica_acks=0, replica_ack_timeout_ms=5000).replica_ack_timeout_ms == 5000


def test_environment_form_and_the_sentinel_password_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDER_EXECUTION__REDIS__SENTINELS", '["127.0.0.1:26379", "127.0.0.1:26380"]')
    monkeypatch.setenv("ORDER_EXECUTION__REDIS__SENTINEL_PASSWORD", "sentinel-only-pass")
    monkeypatch.setenv("ORDER_EXECUTION__REDIS__MASTER_NAME", "desk-primary")
    settings = load_settings(None)
    assert settings.redis.sentinel_addresses == [("127.0.0.1", 26379), ("127.0.0.1", 26380)]
    assert settings.redis.master_name == "desk-primary"
    assert "sentinel-only-pass" in settings.secret_values()
    assert "sentinel-only-pass" not in repr(settings.redis)


def test_a_bad_sentinel_in_the_environment_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDER_EXECUTION__REDIS__SENTINELS", '["nowhere"]')
    with pytest.raises(SettingsError, match="sentinels"):
        load_settings(None)
