"""``/mcp`` with OAuth: the ``mcp`` SDK's client and OAuth client provider against a real gateway.

The client knows only the ``/mcp`` URL. Consent is given over HTTP exactly as the console's
page gives it (the Chromium variant is ``tests/console/test_console_oauth.py``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import mcp_types as types
import pytest
from sqlmodel import Session, select

from runtime.oauth.models import OAuthClient, OAuthGrant, OAuthToken
from runtime.storage.keys import hash_key, mint_admin_key
from runtime.storage.models import ApiKey, UsageRecord
from tests.fakes.openai_server import FakeOpenAI
from tests.mcp_oauth.support import (
    CALLBACK_PATH,
    MetadataDocumentHost,
    SignIn,
    approve_over_http,
    callback_result,
    consent_request_id,
    loopback_resolver,
    make_tls,
)
from tests.services import fresh_database
from tests.support import Gateways, GatewayServer, make_settings, wait_until

CIMD_HOST = "client.test"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, upstream_server: FakeOpenAI) -> Iterator[GatewayServer]:
    # Single-use codes and refresh tokens are claimed by conditional UPDATEs: both databases.
    directory = tmp_path_factory.mktemp("oauth")
    for database_url in fresh_database(request.param, directory, prefix="oauth"):
        # key_cache_ttl_s 0: a revocation bites at the next request.
        settings = make_settings(
            directory,
            upstream_server.base_url,
            database_url=database_url,
            key_cache_ttl_s=0,
            # Every test signs in from 127.0.0.1: the per-address limit has its own test.
            oauth_server={"client_metadata_private_hosts": True, "requests_per_minute_per_ip": None},
        )
        with Gateways() as started:
            yield started.start(settings)


@pytest.fixture(scope="module")
def admin_key(server: GatewayServer) -> str:
    secret, _row = mint_admin_key(server.gateway.engine, name="oauth-tests")
    return secret


@pytest.fixture(scope="module")
def metadata_host(tmp_path_factory: pytest.TempPathFactory, server: GatewayServer) -> Iterator[MetadataDocumentHost]:
    tls = make_tls(tmp_path_factory.mktemp("tls"), CIMD_HOST)
    host = MetadataDocumentHost(tls, CIMD_HOST).start()
    fetcher = server.app.state.oauth_server.metadata_documents
    # DNS and the trust store are the test's: client.test is 127.0.0.1, its certificate from our CA.
    fetcher.resolve = loopback_resolver(CIMD_HOST)
    fetcher.ssl_context = tls.context()
    yield host
    host.stop()


def consent_by_http(server: GatewayServer, admin_key: str, **approval: Any) -> Any:
    async def consent(authorization_url: str) -> str:
        request_id = await asyncio.to_thread(consent_request_id, server, authorization_url)
        return await asyncio.to_thread(approve_over_http, server, admin_key, request_id, **approval)

    return consent


def grants(server: GatewayServer) -> list[OAuthGrant]:
    with Session(server.gateway.engine) as session:
        return list(session.exec(select(OAuthGrant)))


def usage_of_key(server: GatewayServer, key_id: str) -> list[UsageRecord]:
    server.flush_usage()
    with Session(server.gateway.engine) as session:
        return list(session.exec(select(UsageRecord).where(UsageRecord.key_id == key_id)))


def mcp_post(server: GatewayServer, token: str, **headers: str) -> httpx.Response:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
    }
    return httpx.post(
        f"{server.url}/mcp",
        json=body,
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2025-11-25",
            **headers,
        },
    )


# -- discovery ------------------------------------------------------------------------------------


def test_a_401_from_mcp_names_the_protected_resource_metadata_which_names_plugway_as_authorization_server(server: GatewayServer) -> None:
    refused = httpx.post(f"{server.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert refused.status_code == 401
    challenge = refused.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{server.url}/.well-known/oauth-protected-resource/mcp"' in challenge

    for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"):
        metadata = httpx.get(server.url + path).json()
        assert metadata["resource"] == f"{server.url}/mcp"
        assert metadata["authorization_servers"] == [server.url]
        assert metadata["scopes_supported"] == ["mcp"]

    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        metadata = httpx.get(server.url + path).json()
        assert metadata["issuer"] == server.url
        assert metadata["authorization_endpoint"] == f"{server.url}/oauth/authorize"
        assert metadata["token_endpoint"] == f"{server.url}/oauth/token"
        assert metadata["registration_endpoint"] == f"{server.url}/oauth/register"
        assert metadata["revocation_endpoint"] == f"{server.url}/oauth/revoke"
        assert metadata["code_challenge_methods_supported"] == ["S256"]
        assert metadata["client_id_metadata_document_supported"] is True
        assert metadata["authorization_response_iss_parameter_supported"] is True


# -- the whole flow with the SDK's client ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_client_that_knows_only_the_url_registers_signs_in_and_calls_tools_as_a_key_of_the_chosen_organisation(
    server: GatewayServer, admin_key: str, mode: str
) -> None:
    sign_in = SignIn(server, consent_by_http(server, admin_key, organisation="acme", rpm=100))
    async with sign_in.client(mode=mode) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        result = await client.call_tool("calculator__evaluate", {"expression": "6*7"})

    assert {"calculator__evaluate", "clock__now"} <= tools
    assert not result.is_error and "42" in "".join(b.text for b in result.content if isinstance(b, types.TextContent))
    # Dynamic client registration happened (no metadata document URL was offered).
    client_id = sign_in.storage.client_info.client_id if sign_in.storage.client_info else None
    with Session(server.gateway.engine) as session:
        assert session.get(OAuthClient, client_id or "") is not None
    # The token is the grant's gateway key: its organisation, its limits, its usage records.
    grant = next(grant for grant in grants(server) if grant.client_id == client_id)
    with Session(server.gateway.engine) as session:
        key = session.get(ApiKey, grant.key_id)
    assert key is not None and key.organisation_id == "acme" and key.rpm == 100
    assert key.name == "OAuth: Test Assistant"
    records = usage_of_key(server, grant.key_id)
    assert [(record.source, record.model, record.status) for record in records] == [("mcp", "calculator__evaluate", "ok")]
    # Stored hashed: neither token appears in the database.
    assert sign_in.storage.tokens is not None
    with Session(server.gateway.engine) as session:
        stored = {row.token_hash for row in session.exec(select(OAuthToken))}
    for token in (sign_in.storage.tokens.access_token, sign_in.storage.tokens.refresh_token):
        assert token not in stored and hash_key(token or "") in stored


async def test_an_expired_access_token_is_refreshed_by_the_client_and_the_used_refresh_token_is_rotated_out(
    server: GatewayServer, admin_key: str
) -> None:
    sign_in = SignIn(server, consent_by_http(server, admin_key))
    provider = sign_in.provider()
    async with sign_in.client(provider) as client:
        await client.list_tools()
    first = sign_in.storage.tokens
    assert first is not None and first.refresh_token is not None

    # The client believes its token expired: it refreshes before the next request.
    provider.context.token_expiry_time = time.time() - 1
    async with sign_in.client(provider) as client:
        await client.list_tools()
    second = sign_in.storage.tokens
    assert second is not None and second.access_token != first.access_token and second.refresh_token != first.refresh_token
    assert len(sign_in.authorization_urls) == 1  # refreshed, not signed in again

    # The earlier access token ended with the refresh; the earlier refresh token is used up.
    assert mcp_post(server, first.access_token).status_code == 401
    assert mcp_post(server, second.access_token).status_code == 200
    reused = await asyncio.to_thread(
        httpx.post,
        f"{server.url}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": first.refresh_token, "client_id": sign_in.storage.client_info.client_id, "client_secret": sign_in.storage.client_info.client_secret or ""},  # type: ignore[union-attr]
    )
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    # A refresh token presented twice has leaked: the whole grant ends.
    assert mcp_post(server, second.access_token).status_code == 401


async def test_revoking_the_grant_ends_access_at_the_next_call(server: GatewayServer, admin_key: str) -> None:
    sign_in = SignIn(server, consent_by_http(server, admin_key))
    async with sign_in.client() as client:
        await client.list_tools()
    tokens = sign_in.storage.tokens
    assert tokens is not None
    grant = next(grant for grant in grants(server) if sign_in.storage.client_info and grant.client_id == sign_in.storage.client_info.client_id)

    admin = {"Authorization": f"Bearer {admin_key}"}
    listed = (await asyncio.to_thread(httpx.get, f"{server.url}/admin/v1/oauth/grants", headers=admin)).json()["data"]
    assert grant.id in [entry["id"] for entry in listed]
    revoked = await asyncio.to_thread(httpx.delete, f"{server.url}/admin/v1/oauth/grants/{grant.id}", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None

    refused = mcp_post(server, tokens.access_token)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    with Session(server.gateway.engine) as session:
        key = session.get(ApiKey, grant.key_id)
    assert key is not None and key.revoked_at is not None
    audit = (await asyncio.to_thread(httpx.get, f"{server.url}/admin/v1/audit", headers=admin)).json()["data"]
    assert {"oauth.grant.approve", "oauth.grant.revoke"} <= {event["action"] for event in audit}


async def test_a_client_id_metadata_document_signs_in_without_registering(
    server: GatewayServer, admin_key: str, metadata_host: MetadataDocumentHost
) -> None:
    client_id = metadata_host.publish(
        "/oauth/client.json",
        {"client_name": "Metadata Assistant", "redirect_uris": [f"{server.url}{CALLBACK_PATH}"], "token_endpoint_auth_method": "none"},
    )
    sign_in = SignIn(server, consent_by_http(server, admin_key), client_metadata_url=client_id)
    async with sign_in.client() as client:
        result = await client.call_tool("calculator__evaluate", {"expression": "2+2"})
    assert not result.is_error

    assert parse_qs(urlsplit(sign_in.authorization_urls[0]).query)["client_id"] == [client_id]
    assert "/oauth/client.json" in metadata_host.fetches
    grant = next(grant for grant in grants(server) if grant.client_id == client_id)
    assert grant.client_name == "Metadata Assistant"
    with Session(server.gateway.engine) as session:
        assert list(session.exec(select(OAuthClient).where(OAuthClient.id == client_id))) == []


# -- refusals, with raw HTTP where the SDK would never send it ------------------------------------------


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def register(server: GatewayServer) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/oauth/register",
        json={"client_name": "raw", "redirect_uris": [f"{server.url}{CALLBACK_PATH}"], "token_endpoint_auth_method": "none"},
    )
    assert response.status_code == 201, response.text
    registered: dict[str, Any] = response.json()
    return registered


def authorize_url(server: GatewayServer, client_id: str, challenge: str, **extra: str) -> str:
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": f"{server.url}{CALLBACK_PATH}",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "s1",
        "resource": f"{server.url}/mcp",
        "scope": "mcp",
        **extra,
    }
    return f"{server.url}/oauth/authorize?{urlencode(query)}"


def code_for(server: GatewayServer, admin_key: str, client_id: str, challenge: str) -> str:
    request_id = consent_request_id(server, authorize_url(server, client_id, challenge))
    return callback_result(approve_over_http(server, admin_key, request_id)).code


def exchange(server: GatewayServer, client_id: str, code: str, verifier: str, **extra: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": f"{server.url}{CALLBACK_PATH}",
            "client_id": client_id,
            "code_verifier": verifier,
            **extra,
        },
    )


def test_a_code_verifier_that_does_not_match_the_challenge_gets_no_token(server: GatewayServer, admin_key: str) -> None:
    client = register(server)
    verifier, challenge = pkce()
    code = code_for(server, admin_key, client["client_id"], challenge)

    wrong = exchange(server, client["client_id"], code, pkce()[0])
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    right = exchange(server, client["client_id"], code, verifier)
    assert right.status_code == 200 and right.json()["access_token"].startswith("pwo_")
    # A code is good once.
    again = exchange(server, client["client_id"], code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_plain_pkce_and_a_missing_challenge_are_refused(server: GatewayServer) -> None:
    client = register(server)
    plain = httpx.get(authorize_url(server, client["client_id"], "x" * 43, code_challenge_method="plain"), follow_redirects=False)
    assert plain.status_code == 302 and "error=invalid_request" in plain.headers["location"]
    query = {"response_type": "code", "client_id": client["client_id"], "redirect_uri": f"{server.url}{CALLBACK_PATH}", "state": "s"}
    missing = httpx.get(f"{server.url}/oauth/authorize?{urlencode(query)}", follow_redirects=False)
    assert missing.status_code == 302 and "error=invalid_request" in missing.headers["location"]


def test_a_token_for_another_resource_is_refused(server: GatewayServer, admin_key: str) -> None:
    client = register(server)
    verifier, challenge = pkce()
    # Asked for at the authorization endpoint: sent back with invalid_target, no consent page.
    other = httpx.get(authorize_url(server, client["client_id"], challenge, resource="https://elsewhere.example/mcp"), follow_redirects=False)
    assert other.status_code == 302
    assert parse_qs(urlsplit(other.headers["location"]).query)["error"] == ["invalid_target"]
    # Asked for at the token endpoint: refused.
    code = code_for(server, admin_key, client["client_id"], challenge)
    refused = exchange(server, client["client_id"], code, verifier, resource="https://elsewhere.example/mcp")
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_target"
    token = exchange(server, client["client_id"], code, verifier).json()["access_token"]
    assert mcp_post(server, token).status_code == 200
    # The same token presented to the gateway under another name (another resource URL) is refused.
    assert mcp_post(server, token, Host=f"localhost:{server.port}").status_code == 401


def test_an_access_token_opens_only_mcp_and_a_gateway_key_keeps_working_there(server: GatewayServer, admin_key: str) -> None:
    client = register(server)
    verifier, challenge = pkce()
    token = exchange(server, client["client_id"], code_for(server, admin_key, client["client_id"], challenge), verifier).json()["access_token"]
    models = httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {token}"})
    assert models.status_code == 401
    assert mcp_post(server, server.mint()).status_code == 200


def test_revocation_endpoint_ends_the_grant(server: GatewayServer, admin_key: str) -> None:
    client = register(server)
    verifier, challenge = pkce()
    tokens = exchange(server, client["client_id"], code_for(server, admin_key, client["client_id"], challenge), verifier).json()
    revoked = httpx.post(f"{server.url}/oauth/revoke", data={"token": tokens["refresh_token"], "client_id": client["client_id"]})
    assert revoked.status_code == 200
    assert mcp_post(server, tokens["access_token"]).status_code == 401


async def test_a_metadata_document_on_a_private_address_is_not_fetched_unless_allowed(
    server: GatewayServer, metadata_host: MetadataDocumentHost
) -> None:
    client_id = metadata_host.publish("/oauth/private.json", {"client_name": "Probe", "redirect_uris": [f"{server.url}{CALLBACK_PATH}"]})
    fetcher = server.app.state.oauth_server.metadata_documents
    fetcher.allow_private_hosts = False
    try:
        refused = await asyncio.to_thread(httpx.get, authorize_url(server, client_id, pkce()[1]), follow_redirects=False)
    finally:
        fetcher.allow_private_hosts = True
    assert refused.status_code == 400 and "is not a public address" in refused.json()["error_description"]
    assert "/oauth/private.json" not in metadata_host.fetches


def test_a_metadata_document_that_does_not_name_itself_is_refused(server: GatewayServer, metadata_host: MetadataDocumentHost) -> None:
    metadata_host.publish("/oauth/liar.json", {"redirect_uris": [f"{server.url}{CALLBACK_PATH}"]})
    metadata_host.documents["/oauth/liar.json"]["client_id"] = "https://someone-else.example/client.json"
    client_id = f"https://{CIMD_HOST}:{metadata_host.port}/oauth/liar.json"
    refused = httpx.get(authorize_url(server, client_id, pkce()[1]), follow_redirects=False)
    assert refused.status_code == 400 and "client_id is not its own URL" in refused.json()["error_description"]
    assert "/oauth/liar.json" in metadata_host.fetches


def test_a_consent_request_is_answered_once(server: GatewayServer, admin_key: str, tmp_path: Path) -> None:
    client = register(server)
    request_id = consent_request_id(server, authorize_url(server, client["client_id"], pkce()[1]))
    approve_over_http(server, admin_key, request_id)
    again = httpx.post(
        f"{server.url}/admin/v1/oauth/requests/{request_id}/approve",
        headers={"Authorization": f"Bearer {admin_key}"},
        json={"organisation": "acme", "scopes": ["mcp"]},
    )
    assert again.status_code == 404 and "answered" in again.json()["error"]["message"]
    unknown_org = httpx.post(
        f"{server.url}/admin/v1/oauth/requests/{consent_request_id(server, authorize_url(server, client['client_id'], pkce()[1]))}/approve",
        headers={"Authorization": f"Bearer {admin_key}"},
        json={"organisation": "nowhere", "scopes": ["mcp"]},
    )
    assert unknown_org.status_code == 400 and unknown_org.json()["error"]["param"] == "organisation"


def test_denying_sends_the_browser_back_with_access_denied_and_no_code(server: GatewayServer, admin_key: str) -> None:
    client = register(server)
    request_id = consent_request_id(server, authorize_url(server, client["client_id"], pkce()[1]))
    denied = httpx.post(f"{server.url}/admin/v1/oauth/requests/{request_id}/deny", headers={"Authorization": f"Bearer {admin_key}"})
    assert denied.status_code == 200
    query = parse_qs(urlsplit(denied.json()["redirect_to"]).query)
    assert query["error"] == ["access_denied"] and query["state"] == ["s1"] and "code" not in query
    assert httpx.get(f"{server.url}/admin/v1/oauth/requests/{request_id}", headers={"Authorization": f"Bearer {admin_key}"}).status_code == 404


def test_revoking_the_grants_key_on_the_keys_page_ends_the_grant_too(server: GatewayServer, admin_key: str) -> None:
    client = register(server)
    verifier, challenge = pkce()
    token = exchange(server, client["client_id"], code_for(server, admin_key, client["client_id"], challenge), verifier).json()["access_token"]
    admin = {"Authorization": f"Bearer {admin_key}"}
    grant = next(entry for entry in httpx.get(f"{server.url}/admin/v1/oauth/grants", headers=admin).json()["data"] if entry["client_id"] == client["client_id"])
    assert httpx.delete(f"{server.url}/admin/v1/keys/{grant['key_id']}", headers=admin).status_code in (200, 204)
    assert mcp_post(server, token).status_code == 401
    live = httpx.get(f"{server.url}/admin/v1/oauth/grants", headers=admin).json()["data"]
    assert grant["id"] not in [entry["id"] for entry in live]


def test_expired_authorization_requests_and_tokens_are_purged(server: GatewayServer, admin_key: str) -> None:
    from datetime import timedelta

    from runtime.oauth import store
    from runtime.oauth.models import OAuthAuthorization
    from runtime.storage.models import utcnow

    client = register(server)
    request_id = consent_request_id(server, authorize_url(server, client["client_id"], pkce()[1]))
    with Session(server.gateway.engine) as session:
        row = session.get(OAuthAuthorization, request_id)
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
        session.add(row)
        session.add(OAuthToken(token_hash="0" * 64, kind="access", grant_id="oag_gone", expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    consented = register(server)
    code_for(server, admin_key, consented["client_id"], pkce()[1])
    with Session(server.gateway.engine) as session:
        for client_id in (client["client_id"], consented["client_id"]):
            old = session.get(OAuthClient, client_id)
            assert old is not None
            old.created_at = utcnow() - timedelta(days=8)
            session.add(old)
        session.commit()
    assert store.purge(server.gateway.engine) >= 3
    with Session(server.gateway.engine) as session:
        assert session.get(OAuthAuthorization, request_id) is None
        assert session.get(OAuthToken, "0" * 64) is None
        assert session.get(OAuthClient, client["client_id"]) is None
        # A registration that led to a consent stays.
        assert session.get(OAuthClient, consented["client_id"]) is not None


def test_a_configured_public_url_is_the_issuer_and_the_resource_whatever_the_request_says(
    tmp_path: Path, upstream_server: FakeOpenAI, gateways: Gateways
) -> None:
    public = "https://gateway.example.com"
    settings = make_settings(tmp_path, upstream_server.base_url, oauth_server={"public_url": public + "/"})
    gateway = gateways.start(settings)
    challenge = httpx.post(f"{gateway.url}/mcp", json={}).headers["www-authenticate"]
    resource = httpx.get(f"{gateway.url}/.well-known/oauth-protected-resource/mcp").json()
    server_metadata = httpx.get(f"{gateway.url}/.well-known/oauth-authorization-server").json()
    assert f'resource_metadata="{public}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert resource["resource"] == f"{public}/mcp" and resource["authorization_servers"] == [public]
    assert server_metadata["issuer"] == public and server_metadata["token_endpoint"] == f"{public}/oauth/token"


def test_with_the_oauth_server_off_mcp_takes_gateway_keys_only(tmp_path: Path, upstream_server: FakeOpenAI, gateways: Gateways) -> None:
    settings = make_settings(tmp_path, upstream_server.base_url, oauth_server={"enabled": False})
    gateway = gateways.start(settings)
    challenge = httpx.post(f"{gateway.url}/mcp", json={}).headers["www-authenticate"]
    metadata = httpx.get(f"{gateway.url}/.well-known/oauth-authorization-server")
    with_key = mcp_post(gateway, gateway.mint())
    assert challenge == 'Bearer realm="plugway"'
    assert metadata.status_code == 404
    assert with_key.status_code == 200


def test_a_native_client_may_come_back_to_any_loopback_port_of_its_redirect_uri(
    server: GatewayServer, admin_key: str, metadata_host: MetadataDocumentHost
) -> None:
    client_id = metadata_host.publish("/oauth/native.json", {"client_name": "Native", "redirect_uris": ["http://127.0.0.1/callback"]})
    verifier, challenge = pkce()
    redirect_uri = "http://127.0.0.1:51234/callback"
    request_id = consent_request_id(server, authorize_url(server, client_id, challenge, redirect_uri=redirect_uri))
    sent_back = approve_over_http(server, admin_key, request_id)
    assert sent_back.startswith(redirect_uri + "?")
    tokens = exchange(server, client_id, callback_result(sent_back).code, verifier, redirect_uri=redirect_uri)
    assert tokens.status_code == 200, tokens.text
    # Another path, or another host, is still refused.
    for wrong in ("http://127.0.0.1:51234/elsewhere", "http://example.com:51234/callback"):
        refused = httpx.get(authorize_url(server, client_id, challenge, redirect_uri=wrong), follow_redirects=False)
        assert refused.status_code == 400, wrong


def test_the_token_endpoint_is_named_in_the_request_log(server: GatewayServer, admin_key: str) -> None:
    client = register(server)
    verifier, challenge = pkce()
    exchange(server, client["client_id"], code_for(server, admin_key, client["client_id"], challenge), verifier, resource="https://elsewhere.example/mcp")
    admin = {"Authorization": f"Bearer {admin_key}"}

    def logged() -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = httpx.get(f"{server.url}/admin/v1/requests", params={"route": "/oauth/token"}, headers=admin).json()["data"]
        return entries

    entries = wait_until(logged, "the token request in the request log")
    assert entries[0]["route"] == "/oauth/token" and entries[0]["status"] == 400


def test_one_address_may_register_and_authorize_only_so_often(tmp_path: Path, upstream_server: FakeOpenAI) -> None:
    """The endpoints anyone may call, and which store something, are limited per client address."""
    settings = make_settings(tmp_path, upstream_server.base_url, oauth_server={"requests_per_minute_per_ip": 3})
    with Gateways() as started:
        server = started.start(settings)
        client_id = register(server)["client_id"]
        assert httpx.get(authorize_url(server, client_id, "x" * 43)).status_code in (200, 302)
        register(server)
        refused = httpx.post(f"{server.url}/oauth/register", json={"client_name": "raw", "redirect_uris": [f"{server.url}{CALLBACK_PATH}"], "token_endpoint_auth_method": "none"})
        assert refused.status_code == 429 and refused.json()["error"] == "slow_down"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert httpx.get(authorize_url(server, client_id, "x" * 43)).status_code == 429
        # Discovery and tokens are not counted: a client that registered can still finish signing in.
        assert httpx.get(f"{server.url}/.well-known/oauth-authorization-server").status_code == 200
        with Session(server.gateway.engine) as db:
            assert len(db.exec(select(OAuthClient)).all()) == 2
