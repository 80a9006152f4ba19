"""TLS for the gRPC port, from `server.tls`: plaintext unless a certificate is configured."""

from __future__ import annotations

from pathlib import Path

import grpc

from order_execution.runtime.settings import SettingsError, TlsSettings


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials | None:
    """Credentials for `add_secure_port`, or None for plaintext (no certificate configured).

    With `client_ca_file` set, clients must present a certificate that CA signed (mutual
    TLS). Raises SettingsError naming the key of a file that cannot be read.
    """
    if not tls.enabled:
        return None
    cert = _read("server.tls.cert_file", tls.cert_file)
    key = _read("server.tls.key_file", tls.key_file)
    client_ca = _read("server.tls.client_ca_file", tls.client_ca_file) if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def add_port(server: grpc.aio.Server, address: str, tls: TlsSettings) -> int:
    """Listen on `address`, with TLS if configured; returns the bound port."""
    credentials = server_credentials(tls)
    if credentials is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, credentials)


def _read(key: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"{key}: cannot read {path}: {exc.strerror}") from None
