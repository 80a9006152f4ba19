"""The local API key `up` makes, and the CLI's channel that sends it."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import fakeredis
import grpc
import pytest
from pydantic import SecretStr
from usdm_simulator.cli import build_config

from order_execution.cli import up
from order_execution.cli.credentials import ensure_local_key, open_channel
from order_execution.launcher import launch, stack
from order_execution.launcher.service_env import local_client_json
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc
from order_execution.runtime.settings import (
    ApiClientSettings,
    AuthSettings,
    ClientSettings,
    Settings,
    load_settings,
)
from order_execution.runtime.settings_access import hash_key
from tests.unit.gateway_harness import serving_gateway


def test_the_local_key_is_private_random_and_reused(tmp_path: Path) -> None:
    path = tmp_path / ".run" / "api-key"
    key = ensure_local_key(path)
    assert len(key) >= 40 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_local_key(path) == key  # an exported copy stays valid across `up` runs
    assert ensure_local_key(tmp_path / "other") != key


def test_the_gateway_gets_only_the_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = ensure_local_key(tmp_path / "api-key")
    assert key not in local_client_json(key)
    monkeypatch.setenv("ORDER_EXECUTION__AUTH__CLIENTS", local_client_json(key))
    clients = load_settings().auth.clients
    assert [(c.name, c.key_sha256, c.admin) for c in clients] == [("local", hash_key(key), True)]


def test_up_makes_a_key_only_when_auth_is_on_and_none_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env: dict[str, str] = {}
    row = up._api_key_setup(Settings(), env)
    key = (tmp_path / ".run" / "api-key").read_text().strip()
    assert env == {"ORDER_EXECUTION__AUTH__CLIENTS": local_client_json(key)}
    assert "export ORDER_EXECUTION_API_KEY=$(cat" in row and key not in row
    configured = Settings(auth=AuthSettings(clients=[ApiClientSettings(name="a", key_sha256="0" * 64)]))
    for settings in (configured, Settings(auth=AuthSettings(enabled=False))):
        env = {}
        up._api_key_setup(settings, env)
        assert env == {}


async def test_the_cli_channel_sends_the_key_from_settings_or_the_local_file(tmp_path: Path) -> None:
    local = tmp_path / "api-key"
    key = ensure_local_key(local)
    auth = AuthSettings(clients=[ApiClientSettings(name="local", key_sha256=hash_key(key))])
    redis = fakeredis.FakeAsyncRedis()

    def list_orders(settings: ClientSettings, key_file: Path) -> grpc.StatusCode:
        with open_channel(target, settings, key_file) as channel:
            try:
                order_pb2_grpc.OrderServiceStub(channel).ListOrders(pb.ListOrdersRequest(), timeout=3)
            except grpc.RpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    async with serving_gateway(redis, redis, auth=auth) as target:
        absent = tmp_path / "absent"
        assert await asyncio.to_thread(list_orders, ClientSettings(), local) == grpc.StatusCode.OK
        assert (
            await asyncio.to_thread(list_orders, ClientSettings(), absent) == grpc.StatusCode.UNAUTHENTICATED
        )
        from_env = ClientSettings(api_key=SecretStr(key))
        assert await asyncio.to_thread(list_orders, from_env, absent) == grpc.StatusCode.OK
        wrong = ClientSettings(api_key=SecretStr("not-" + key))
        assert await asyncio.to_thread(list_orders, wrong, local) == grpc.StatusCode.UNAUTHENTICATED
    await redis.aclose()


def test_the_api_key_environment_name_reaches_the_client_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDER_EXECUTION_API_KEY", "k" * 43)
    assert load_settings().client.api_key.get_secret_value() == "k" * 43


def test_the_simulator_and_its_admin_api_listen_on_loopback_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SIM_HOST", raising=False)
    config, _ = build_config(["--port", "0"])
    assert config.host == "127.0.0.1"
    # `up` and the test stack start it without --host, so it stays on loopback there too.
    for module in (up, stack, launch):
        assert "--host" not in Path(module.__file__ or "").read_text()
