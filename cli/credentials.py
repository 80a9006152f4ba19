"""How the CLI and `up` authenticate to the gateway: the local API key file and the gRPC channel.

`up` with authentication on and no `auth.clients` configured generates one key for this
machine, keeps it in `.run/api-key` (mode 0600 in a 0700 directory; reused by later runs,
so an exported copy stays valid, once its owner and mode are checked) and gives the gateway
only its SHA-256. The CLI sends `client.api_key` (`$ORDER_EXECUTION_API_KEY`) as metadata
`x-api-key`, else the key in `.run/api-key` when run where `up` runs, and uses TLS when
`client.tls_ca_file` is set.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import grpc

from order_execution.gateway.auth import API_KEY_HEADER
from order_execution.launcher.run_dir import secret_file
from order_execution.runtime.settings import ClientSettings, SettingsError

LOCAL_KEY_FILE = Path(".run") / "api-key"


def ensure_local_key(path: Path = LOCAL_KEY_FILE) -> str:
    """The API key in `path`, first creating it (random, 256 bits, mode 0600 in a 0700 directory)
    if absent. Raises UnsafeFile (saying how to fix it) if the file exists but is not owned by
    this user or is open to group or others."""
    return secret_file(path, lambda: secrets.token_urlsafe(32))


def api_key(settings: ClientSettings, local_file: Path = LOCAL_KEY_FILE) -> str:
    """The key the CLI sends: `client.api_key`, else the one `up` keeps in `local_file`, else ""."""
    configured = settings.api_key.get_secret_value()
    if configured:
        return configured
    try:
        return local_file.read_text().strip()
    except OSError:
        return ""


class _ApiKey(grpc.AuthMetadataPlugin):
    def __init__(self, key: str) -> None:
        self._key = key

    def __call__(self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback) -> None:
        callback(((API_KEY_HEADER, self._key),), None)


if TYPE_CHECKING:
    _UnaryUnary = grpc.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStream = grpc.UnaryStreamClientInterceptor[Any, Any]
else:
    _UnaryUnary = grpc.UnaryUnaryClientInterceptor
    _UnaryStream = grpc.UnaryStreamClientInterceptor


class _KeyInterceptor(_UnaryUnary, _UnaryStream):
    """Adds the API key to every call of a plaintext channel (call credentials need TLS)."""

    def __init__(self, key: str) -> None:
        self._key = key

    def _with_key(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [*(details.metadata or ()), (API_KEY_HEADER, self._key)]
        # grpc's own call details are a namedtuple
        return cast(grpc.ClientCallDetails, cast(Any, details)._replace(metadata=metadata))

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        return continuation(self._with_key(client_call_details), request)

    def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        return continuation(self._with_key(client_call_details), request)


def open_channel(target: str, settings: ClientSettings, local_file: Path = LOCAL_KEY_FILE) -> grpc.Channel:
    """A blocking channel to the gateway at `target` carrying the API key (if any), over TLS
    when `tls_ca_file` is set (with a client certificate when `tls_cert_file` is). Raises
    SettingsError naming a certificate file that cannot be read."""
    key = api_key(settings, local_file)
    if not settings.tls_ca_file:
        channel = grpc.insecure_channel(target)
        return grpc.intercept_channel(channel, _KeyInterceptor(key)) if key else channel
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read("client.tls_ca_file", settings.tls_ca_file),
        private_key=_read("client.tls_key_file", settings.tls_key_file) if settings.tls_key_file else None,
        certificate_chain=(
            _read("client.tls_cert_file", settings.tls_cert_file) if settings.tls_cert_file else None
        ),
    )
    if key:
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.metadata_call_credentials(_ApiKey(key))
        )
    return grpc.secure_channel(target, credentials)


def _read(setting: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"{setting}: cannot read {path}: {exc.strerror}") from None
