"""TLS and mutual TLS on the gRPC port, with certificates made in the test."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fakeredis
import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from order_execution.cli.credentials import open_channel
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc
from order_execution.runtime.settings import (
    ApiClientSettings,
    AuthSettings,
    ClientSettings,
    SettingsError,
    TlsSettings,
)
from order_execution.runtime.settings_access import hash_key
from tests.unit.gateway_harness import serving_gateway


@dataclass
class Pem:
    cert: bytes
    key: bytes


def _issue(
    name: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, *, ca: bool
) -> tuple[Pem, x509.Name, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(issuer_key, hashes.SHA256())
    pem = Pem(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    return pem, subject, key


@dataclass
class Pki:
    ca: Pem
    server: Pem
    client: Pem
    other_client: Pem  # signed by a CA the server does not trust
    dir: Path

    def write(self, name: str, data: bytes) -> str:
        path = self.dir / name
        path.write_bytes(data)
        return str(path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    ca, ca_name, ca_key = _issue("test CA", None, ca=True)
    server, _, _ = _issue("localhost", (ca_name, ca_key), ca=False)
    client, _, _ = _issue("a strategy", (ca_name, ca_key), ca=False)
    _, rogue_name, rogue_key = _issue("rogue CA", None, ca=True)
    other, _, _ = _issue("a stranger", (rogue_name, rogue_key), ca=False)
    yield Pki(ca, server, client, other, tmp_path_factory.mktemp("pki"))


def _server_tls(pki: Pki, *, mutual: bool = False) -> TlsSettings:
    return TlsSettings(
        cert_file=pki.write("server.pem", pki.server.cert),
        key_file=pki.write("server.key", pki.server.key),
        client_ca_file=pki.write("ca.pem", pki.ca.cert) if mutual else "",
    )


async def _list(channel: grpc.aio.Channel) -> pb.ListOrdersResponse:
    stub = order_pb2_grpc.OrderServiceStub(channel)
    return await stub.ListOrders(pb.ListOrdersRequest(), timeout=3)


async def test_tls_serves_a_client_that_trusts_the_ca_and_refuses_plaintext(pki: Pki) -> None:
    redis = fakeredis.FakeAsyncRedis()
    async with serving_gateway(redis, redis, tls=_server_tls(pki)) as target:
        credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.cert)
        async with grpc.aio.secure_channel(target, credentials) as channel:
            assert not (await _list(channel)).orders
        async with grpc.aio.insecure_channel(target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _list(channel)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        untrusting = grpc.ssl_channel_credentials(root_certificates=pki.other_client.cert)
        async with grpc.aio.secure_channel(target, untrusting) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _list(channel)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    await redis.aclose()


async def test_mutual_tls_needs_a_client_certificate_from_the_ca(pki: Pki) -> None:
    redis = fakeredis.FakeAsyncRedis()
    async with serving_gateway(redis, redis, tls=_server_tls(pki, mutual=True)) as target:
        with_cert = grpc.ssl_channel_credentials(pki.ca.cert, pki.client.key, pki.client.cert)
        async with grpc.aio.secure_channel(target, with_cert) as channel:
            assert not (await _list(channel)).orders
        for credentials in (
            grpc.ssl_channel_credentials(pki.ca.cert),  # no client certificate
            grpc.ssl_channel_credentials(pki.ca.cert, pki.other_client.key, pki.other_client.cert),
        ):
            async with grpc.aio.secure_channel(target, credentials) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await _list(channel)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    await redis.aclose()


async def test_an_unreadable_certificate_names_the_setting(tmp_path: Path) -> None:
    redis = fakeredis.FakeAsyncRedis()
    missing = TlsSettings(cert_file=str(tmp_path / "nope.pem"), key_file=str(tmp_path / "nope.key"))
    with pytest.raises(SettingsError, match=r"server\.tls\.cert_file: cannot read"):
        async with serving_gateway(redis, redis, tls=missing):
            pass
    await redis.aclose()


def test_tls_settings_must_come_in_pairs() -> None:
    with pytest.raises(ValueError, match="cert_file and key_file must be set together"):
        TlsSettings(cert_file="server.pem")


async def test_the_cli_channel_speaks_tls_with_its_key(pki: Pki, tmp_path: Path) -> None:
    api_key = secrets.token_urlsafe(32)
    auth = AuthSettings(clients=[ApiClientSettings(name="cli", key_sha256=hash_key(api_key))])
    redis = fakeredis.FakeAsyncRedis()

    def list_orders(settings: ClientSettings) -> grpc.StatusCode:
        with open_channel(target, settings, tmp_path / "no-local-key") as channel:
            try:
                order_pb2_grpc.OrderServiceStub(channel).ListOrders(pb.ListOrdersRequest(), timeout=3)
            except grpc.RpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    async with serving_gateway(redis, redis, auth=auth, tls=_server_tls(pki, mutual=True)) as target:
        mutual = ClientSettings(
            api_key=SecretStr(api_key),
            tls_ca_file=pki.write("cli-ca.pem", pki.ca.cert),
            tls_cert_file=pki.write("cli.pem", pki.client.cert),
            tls_key_file=pki.write("cli.key", pki.client.key),
        )
        assert await asyncio.to_thread(list_orders, mutual) == grpc.StatusCode.OK
        no_key = mutual.model_copy(update={"api_key": SecretStr("")})
        assert await asyncio.to_thread(list_orders, no_key) == grpc.StatusCode.UNAUTHENTICATED
        plaintext = ClientSettings(api_key=SecretStr(api_key))
        assert await asyncio.to_thread(list_orders, plaintext) == grpc.StatusCode.UNAVAILABLE
    await redis.aclose()
