"""What the OAuth-on-/mcp tests share: the SDK's OAuth client provider with in-memory storage,
a consent given over HTTP as the console's page gives it, and a TLS server for client metadata
documents."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import httpx2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mcp import Client
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fakes.threaded import ThreadedServer
from tests.support import GatewayServer

CALLBACK_PATH = "/test-oauth-callback"


class MemoryStorage(TokenStorage):
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def callback_result(url: str) -> AuthorizationCodeResult:
    query = {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}
    if "code" not in query:
        raise AssertionError(f"the authorization server sent back no code: {url}")
    return AuthorizationCodeResult(code=query["code"], state=query.get("state"), iss=query.get("iss"))


def consent_request_id(server: GatewayServer, authorization_url: str) -> str:
    """Follow the client's authorization URL as a browser would: plugway sends it to the console's consent page."""
    response = httpx.get(authorization_url, follow_redirects=False)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(f"{server.url}/console/oauth?request="), location
    return parse_qs(urlsplit(location).query)["request"][0]


def approve_over_http(server: GatewayServer, admin_key: str, request_id: str, *, organisation: str = "acme", **extra: Any) -> str:
    """What the consent page's Approve button posts; answers the URL the browser is sent back to."""
    response = httpx.post(
        f"{server.url}/admin/v1/oauth/requests/{request_id}/approve",
        headers={"Authorization": f"Bearer {admin_key}"},
        json={"organisation": organisation, "scopes": ["mcp"], **extra},
    )
    assert response.status_code == 200, response.text
    redirect_to: str = response.json()["redirect_to"]
    return redirect_to


@dataclass
class SignIn:
    """The SDK's OAuth client provider, its consent given by ``consent`` (URL of the authorization request -> URL sent back)."""

    server: GatewayServer
    consent: Callable[[str], Awaitable[str]]
    client_metadata_url: str | None = None
    storage: MemoryStorage = field(default_factory=MemoryStorage)
    authorization_urls: list[str] = field(default_factory=list)
    _callback: str | None = None

    def provider(self) -> OAuthClientProvider:
        async def redirect(url: str) -> None:
            self.authorization_urls.append(url)
            self._callback = await self.consent(url)

        async def callback() -> AuthorizationCodeResult:
            assert self._callback is not None
            return callback_result(self._callback)

        return OAuthClientProvider(
            server_url=f"{self.server.url}/mcp",
            client_metadata=OAuthClientMetadata(
                client_name="Test Assistant",
                redirect_uris=[f"{self.server.url}{CALLBACK_PATH}"],  # type: ignore[list-item]
                grant_types=["authorization_code", "refresh_token"],
                response_types=["code"],
            ),
            storage=self.storage,
            redirect_handler=redirect,
            callback_handler=callback,
            client_metadata_url=self.client_metadata_url,
        )

    @asynccontextmanager
    async def client(self, provider: OAuthClientProvider | None = None, *, mode: str = "auto") -> AsyncIterator[Client]:
        async with httpx2.AsyncClient(auth=provider or self.provider(), timeout=20) as http:
            async with Client(streamable_http_client(f"{self.server.url}/mcp", http_client=http), mode=mode) as client:  # type: ignore[arg-type]
                yield client


# -- a client metadata document served over TLS -----------------------------------------------


@dataclass
class Tls:
    cert: Path
    key: Path
    ca: Path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def make_tls(directory: Path, host: str) -> Tls:
    """A throw-away certificate authority and a certificate for ``host`` signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "plugway test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = Tls(directory / "cert.pem", directory / "key.pem", directory / "ca.pem")
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


class MetadataDocumentHost:
    """An https server (on loopback) publishing client metadata documents, counting fetches."""

    def __init__(self, tls: Tls, host: str) -> None:
        self.host = host
        self.documents: dict[str, dict[str, Any]] = {}
        self.fetches: list[str] = []

        async def document(request: Any) -> JSONResponse:
            path = request.url.path
            self.fetches.append(path)
            if path not in self.documents:
                return JSONResponse({"error": "not found"}, status_code=404)
            return JSONResponse(self.documents[path])

        app = Starlette(routes=[Route("/{path:path}", document)])
        self._runner = ThreadedServer(app, name="client-metadata", options={"ssl_certfile": str(tls.cert), "ssl_keyfile": str(tls.key)})
        self.port = 0

    def start(self) -> MetadataDocumentHost:
        self.port = self._runner.start()
        return self

    def stop(self) -> None:
        self._runner.stop()

    def publish(self, path: str, document: dict[str, Any]) -> str:
        url = f"https://{self.host}:{self.port}{path}"
        self.documents[path] = {"client_id": url, **document}
        return url


def loopback_resolver(host: str) -> Callable[[str, int], Awaitable[list[str]]]:
    """Stands in for DNS: ``host`` is 127.0.0.1; any other name does not resolve."""

    async def resolve(name: str, port: int) -> list[str]:
        if name == host:
            return [str(ipaddress.ip_address("127.0.0.1"))]
        raise OSError(f"{name} does not resolve")

    return resolve
