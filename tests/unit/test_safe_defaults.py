"""Safe defaults: loopback unless told, no unauthenticated service off loopback, credentials in
URLs encoded and decoded by the standard library, TLS to the exchange off loopback, and every
secret (a YAML file's too) masked in logs and in a dump of the settings."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.connection

from order_execution.runtime import logs
from order_execution.runtime import settings as settings_module
from order_execution.runtime.addresses import is_loopback_host, nats_servers, redis_url, without_password
from order_execution.runtime.settings import Settings, SettingsError, load_settings, refuse_open_without_auth

AWKWARD = "p@ss:w/rd%41+?#&x"  # every character a hand-made URL gets wrong


@pytest.fixture(autouse=True)
def _no_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ORDER_EXECUTION_CONFIG", raising=False)
    for name in ("BINANCE_BASE_URL", "REDIS_ADDRESS", "REDIS_PASSWORD", "NATS_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    # load_settings remembers the file it read (a relative ./config.yaml here) for later Settings().
    monkeypatch.setattr(settings_module._YamlSource, "path", None)


def test_every_bind_host_defaults_to_loopback() -> None:
    settings = Settings()
    assert settings.server.host == "127.0.0.1"
    assert settings.dashboard.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.0.0.5", False),
        ("gw.internal", False),
    ],
)
def test_loopback_is_127_8_and_ipv6_1_and_localhost(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize("process", ["gateway", "worker", "listener"])
def test_auth_off_on_a_wildcard_address_is_refused_saying_what_to_do(process: str) -> None:
    settings = Settings(server={"host": "0.0.0.0"}, auth={"enabled": False})
    with pytest.raises(SettingsError) as caught:
        refuse_open_without_auth(settings, process)
    message = str(caught.value)
    assert process in message and "0.0.0.0" in message
    assert "auth.enabled: true" in message and "server.host: 127.0.0.1" in message


def test_auth_off_on_loopback_and_auth_on_anywhere_are_allowed() -> None:
    refuse_open_without_auth(Settings(auth={"enabled": False}), "gateway")
    refuse_open_without_auth(Settings(server={"host": "0.0.0.0"}), "gateway")


def test_the_gateway_refuses_before_binding_or_connecting() -> None:
    from order_execution.gateway.server import serve

    # Redis at a closed port: reaching it would hang on timeouts, the check comes first.
    settings = Settings(server={"host": "0.0.0.0"}, auth={"enabled": False}, redis={"address": "127.0.0.1:1"})
    with pytest.raises(SettingsError, match=r"gateway: server\.host is 0\.0\.0\.0"):
        asyncio.run(serve(settings, stop=asyncio.Event()))


@pytest.mark.usefixtures("restore_logging")
def test_the_cli_reports_the_refusal_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from order_execution.cli.main import main

    monkeypatch.setenv("ORDER_EXECUTION__SERVER__HOST", "0.0.0.0")
    monkeypatch.setenv("ORDER_EXECUTION__AUTH__ENABLED", "false")
    assert main(["worker", "--processes", "1"]) == 2
    assert "worker: server.host is 0.0.0.0" in capsys.readouterr().err


def test_a_redis_password_with_url_characters_survives_the_url() -> None:
    url = Settings(redis={"address": "127.0.0.1:6390", "password": AWKWARD, "db": 4}).redis.url
    assert redis.connection.parse_url(url) == {  # type: ignore[no-untyped-call]
        "password": AWKWARD,
        "host": "127.0.0.1",
        "port": 6390,
        "db": 4,
    }
    assert redis_url("h:1") == "redis://h:1/0"


def test_nats_credentials_are_decoded_out_of_the_url() -> None:
    encoded = "p%40ss%3Aw%2Frd%2541"
    servers = nats_servers(f"nats://order%40x:{encoded}@127.0.0.1:4333, nats://10.0.0.2")
    assert servers.urls == ["nats://127.0.0.1:4333", "nats://10.0.0.2"]
    assert (servers.user, servers.password) == ("order@x", "p@ss:w/rd%41")
    assert "p@ss" not in repr(servers)


def test_a_bad_nats_port_is_refused_without_quoting_the_url() -> None:
    with pytest.raises(ValueError) as caught:
        nats_servers("nats://user:s3cretpass@host:notaport")
    assert "port" in str(caught.value) and "s3cretpass" not in str(caught.value)


def test_without_password_masks_only_the_password() -> None:
    assert without_password("redis://user:p%40ss@h:1/0") == "redis://user:***@h:1/0"
    assert without_password("nats://h:4222") == "nats://h:4222"


@pytest.mark.parametrize(
    ("key", "url"),
    [
        ("base_url", "http://fapi.example.com"),
        ("base_url", "http://10.0.0.5:8090"),
        ("stream_url", "ws://fstream.example.com"),
        ("base_url", "ftp://127.0.0.1"),
    ],
)
def test_the_exchange_needs_tls_off_loopback(key: str, url: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(exchange={key: url})
    assert f"exchange.{key}" in str(caught.value) and "://" in str(caught.value)


@pytest.mark.parametrize(
    "exchange",
    [
        {"base_url": "http://127.0.0.1:8090"},
        {"base_url": "http://localhost:8090", "stream_url": "ws://[::1]:8090"},
        {"base_url": "https://fapi.binance.com"},
        {"base_url": "http://simulator:8090", "plain_http_hosts": ["simulator"]},
    ],
)
def test_plain_http_is_allowed_on_loopback_or_a_listed_host(exchange: dict[str, object]) -> None:
    assert load_settings(exchange=exchange).exchange.rest_url.startswith("http")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put back the root logger, the excepthook and the masked secrets that `main` changes."""
    root = logging.getLogger()
    handlers, level, hook = root.handlers[:], root.level, sys.excepthook
    known, longest = set(logs._secrets), logs._secrets_longest_first
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        sys.excepthook = hook
        logging.captureWarnings(False)
        logs._secrets.clear()
        logs._secrets.update(known)
        logs._secrets_longest_first = longest


YAML_SECRETS = {
    "exchange_secret": "yamlOnlySecretKey0123456789abcdef",
    "redis_password": "yaml-redis/p@ss:%word",
    "nats_password": "yamlNatsPassw0rd!",
    "url_password": "inUrlPass@word",
}
YAML = f"""
exchange:
  api_key: yamlOnlyApiKey0123456789
  secret_key: {YAML_SECRETS["exchange_secret"]}
redis:
  password: "{YAML_SECRETS["redis_password"]}"
nats:
  address: "nats://order:inUrlPass%40word@127.0.0.1:4222"
  user: order
  password: "{YAML_SECRETS["nats_password"]}"
"""


def test_secret_values_collects_every_source(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(YAML)
    found = load_settings().secret_values()
    assert set(YAML_SECRETS.values()) <= set(found)
    assert "yamlOnlyApiKey0123456789" in found


@pytest.mark.usefixtures("restore_logging")
def test_a_secret_only_in_the_yaml_file_never_reaches_a_process_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`order-execution gateway` as the CLI starts it: settings from YAML, logging configured;
    then a line that holds every secret, raw and inside URLs, and an uncaught traceback."""
    import order_execution.gateway.server as gateway_server
    from order_execution.cli.main import main

    (tmp_path / "config.yaml").write_text(YAML)

    async def leaky_serve(settings: Settings) -> None:
        log = logging.getLogger("gateway_server")
        log.info("settings: %r", settings)
        log.info("raw: %s", " ".join(YAML_SECRETS.values()))
        log.warning("redis at %s, nats at %s", settings.redis.url, settings.nats.address)
        try:
            raise ConnectionError(f"cannot reach {settings.redis.url}")
        except ConnectionError:
            log.exception("startup failed")

    monkeypatch.setattr(gateway_server, "serve", leaky_serve)
    assert main(["gateway"]) == 0
    output = capsys.readouterr().err  # the handler writes to stderr
    assert "startup failed" in output and "Traceback" in output  # the lines were written
    for secret in YAML_SECRETS.values():
        assert secret not in output
    assert "inUrlPass%40word" not in output and "yaml-redis%2Fp%40ss" not in output
    assert "yamlOnlySecretKey" not in output and "yamlOnlyApiKey" not in output


def test_a_settings_dump_shows_no_secret(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(YAML.replace("inUrlPass%40word", "inUrlPassword1"))
    settings = load_settings()
    dumped = repr(settings) + str(settings.model_dump()) + settings.model_dump_json()
    for secret in ("yamlOnlySecretKey", "yamlOnlyApiKey", "yaml-redis", "yamlNatsPassw0rd"):
        assert secret not in dumped


def test_a_settings_error_does_not_quote_a_url_password(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("redis: {address: 'redis://:hunter2secret@h:1/0', db: -1}\n")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "redis.db" in str(caught.value) and "hunter2secret" not in str(caught.value)


def test_up_refuses_to_listen_beyond_loopback_with_auth_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from order_execution.cli.main import main

    monkeypatch.setenv("ORDER_EXECUTION__AUTH__ENABLED", "false")
    assert main(["up", "--listen", "0.0.0.0"]) == 2
    message = capsys.readouterr().err
    assert "--listen 0.0.0.0" in message and "auth.enabled: true" in message and "127.0.0.1" in message
    assert not (tmp_path / ".run").exists()  # refused before anything was started or written


def test_up_shows_what_it_exposes() -> None:
    from order_execution.cli.up import _exposure_row, _url_host

    assert _url_host("0.0.0.0") == "127.0.0.1" and _url_host("::1") == "[::1]"
    assert _exposure_row("127.0.0.1").startswith("127.0.0.1 only")
    assert "Redis and NATS on 127.0.0.1 only" in _exposure_row("0.0.0.0")
