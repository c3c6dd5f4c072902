"""Upstream MCP servers that require OAuth (issue 23): plugway as the OAuth client.

The upstream is the `mcp` SDK's MCPServer verifying bearer tokens, with the SDK's
authorization server in the same app (tests/fakes/oauth_mcp.py), on loopback. The
browser's part is driven by the test over HTTP: follow the authorize URL, "sign in"
at the upstream's login page as an account, follow the redirect back to the gateway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import openai
import pytest
from sqlalchemy import text

from runtime.config import ConfigError, settings_from_dict
from runtime.mcp.oauth.service import REFRESH_MARGIN_S
from runtime.storage.keys import mint_admin_key
from tests.fakes.oauth_mcp import CC_CLIENT_ID, CC_CLIENT_SECRET, OAuthMcpServer
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.threaded import bind_loopback
from tests.services import fresh_database
from tests.support import GatewayServer, make_settings, wait_until

SECRETS_KEY = "test-secrets-key-" + "x" * 32


@pytest.fixture
def upstream_mcp() -> Iterator[OAuthMcpServer]:
    server = OAuthMcpServer().start()
    yield server
    server.stop()


def _gateway(tmp_path: Path, upstream: FakeOpenAI, mcp: dict[str, Any], **overrides: Any) -> Iterator[GatewayServer]:
    sock = bind_loopback()
    public_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = make_settings(
        tmp_path,
        upstream.base_url,
        plugins=[{"id": "crm", "mcp": mcp}],
        secrets_key=SECRETS_KEY,
        oauth_server={"public_url": public_url},
        **overrides,
    )
    server = GatewayServer(settings).start(sock=sock)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def org_gateway(tmp_path: Path, upstream: FakeOpenAI, upstream_mcp: OAuthMcpServer) -> Iterator[GatewayServer]:
    yield from _gateway(tmp_path, upstream, {"url": upstream_mcp.mcp_url, "auth": {"type": "oauth"}})


@pytest.fixture
def user_gateway(tmp_path: Path, upstream: FakeOpenAI, upstream_mcp: OAuthMcpServer) -> Iterator[GatewayServer]:
    yield from _gateway(tmp_path, upstream, {"url": upstream_mcp.mcp_url, "auth": {"type": "oauth", "per_user": True}})


def _admin(server: GatewayServer) -> dict[str, str]:
    key, _ = mint_admin_key(server.gateway.engine, name="ops")
    return {"Authorization": f"Bearer {key}"}


def sign_in_at_upstream(authorize_url: str, account: str) -> httpx.Response:
    """What a browser does: the authorization server's page, its login as ``account``, back to the gateway."""
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        login = authorize_url
        for _hop in range(3):  # an end user's link: the gateway, then the authorization server
            response = browser.get(login)
            assert response.status_code == 302, response.text
            login = response.headers["location"]
            if "/login?" in login:
                break
        assert "/login?" in login
        response = browser.get(login + f"&user={account}")
        assert response.status_code == 302, response.text
        back = response.headers["location"]
        return browser.get(back)


def authorize_organisation(server: GatewayServer, admin: dict[str, str], account: str) -> httpx.Response:
    started = httpx.post(
        f"{server.url}/admin/v1/plugins/acme/crm/authorization", json={"return_to": "/console/plugins"}, headers=admin, timeout=10
    )
    assert started.status_code == 200, started.text
    return sign_in_at_upstream(started.json()["authorize_url"], account)


def wait_for_connection(server: GatewayServer) -> None:
    ref = server.settings.organisations[0].plugins[0]
    wait_until(lambda: server.gateway.mcp.connection_health(ref, organisation="acme")["healthy"], "the connection to come up")


def call_whoami(server: GatewayServer, upstream: FakeOpenAI, *, user: str | None = None, tool: str = "crm__whoami") -> str:
    """One chat request whose model calls crm__whoami (or ``tool``); the tool result the model got back."""
    upstream.enqueue(Reply(tool_calls=[(tool, {})]), Reply(text="done"))
    client = openai.OpenAI(base_url=server.base_url, api_key=server.mint())
    extra = {"user": user} if user is not None else {}
    client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "who am I?"}], **extra)
    tool_messages = [m for m in upstream.requests[-1]["messages"] if m.get("role") == "tool"]
    assert tool_messages, upstream.requests[-1]
    content = tool_messages[-1]["content"]
    return content if isinstance(content, str) else str(content)


def test_an_admin_authorizes_the_organisation_in_the_console_flow_and_tools_run_with_its_token(
    org_gateway: GatewayServer, upstream: FakeOpenAI, upstream_mcp: OAuthMcpServer
) -> None:
    admin = _admin(org_gateway)
    health = httpx.get(f"{org_gateway.url}/admin/v1/plugins", params={"organisation": "acme"}, headers=admin).json()["data"][0]
    assert health["authorization"]["authorized"] is False
    assert "not authorized" in (health["health"]["error"] or "")

    landed = authorize_organisation(org_gateway, admin, "acme-service-account")
    # The callback took the browser back to the console page it came from.
    assert landed.status_code == 303 and landed.headers["location"] == "/console/plugins?authorized=crm"
    # Discovery went through RFC 9728 → RFC 8414 and plugway registered itself (RFC 7591), with PKCE and RFC 8707.
    assert upstream_mcp.accounts.registrations == 1
    sent = upstream_mcp.accounts.authorize_requests[-1]
    assert sent.code_challenge and sent.resource == upstream_mcp.mcp_url
    assert str(sent.redirect_uri) == f"{org_gateway.url}/oauth/upstream/callback"

    wait_for_connection(org_gateway)
    assert call_whoami(org_gateway, upstream) == "account:acme-service-account"

    status = httpx.get(f"{org_gateway.url}/admin/v1/plugins/acme/crm/authorization", headers=admin).json()
    assert status["authorized"] is True and status["organisation_authorization"]["refreshable"] is True
    assert "token" not in str(status).replace("refresh", "").lower().replace("tokens", "")


def test_tokens_are_encrypted_at_rest(org_gateway: GatewayServer, upstream_mcp: OAuthMcpServer) -> None:
    authorize_organisation(org_gateway, _admin(org_gateway), "acme-service-account")
    [issued] = list(upstream_mcp.accounts.access)
    [refresh] = list(upstream_mcp.accounts.refresh)
    with org_gateway.gateway.engine.connect() as connection:
        rows = [tuple(str(v) for v in row) for row in connection.execute(text("SELECT * FROM mcp_oauth_tokens"))]
        clients = [tuple(str(v) for v in row) for row in connection.execute(text("SELECT * FROM mcp_oauth_clients"))]
    assert len(rows) == 1
    dumped = repr(rows) + repr(clients)
    assert issued not in dumped and refresh not in dumped
    registered = next(iter(upstream_mcp.accounts.clients.values()))
    assert registered.client_secret and registered.client_secret not in dumped


def test_the_callback_refuses_an_unknown_or_replayed_state(org_gateway: GatewayServer) -> None:
    admin = _admin(org_gateway)
    started = httpx.post(f"{org_gateway.url}/admin/v1/plugins/acme/crm/authorization", json={}, headers=admin).json()
    state = parse_qs(urlparse(started["authorize_url"]).query)["state"][0]
    forged = httpx.get(f"{org_gateway.url}/oauth/upstream/callback", params={"state": "forged", "code": "x"})
    assert forged.status_code == 400 and "unknown or expired" in forged.text
    denied = httpx.get(f"{org_gateway.url}/oauth/upstream/callback", params={"state": state, "error": "access_denied"})
    assert denied.status_code == 400 and "access_denied" in denied.text
    again = httpx.get(f"{org_gateway.url}/oauth/upstream/callback", params={"state": state, "code": "x"})
    assert again.status_code == 400 and "unknown or expired" in again.text


def test_a_user_who_has_not_authorized_gets_the_link_and_then_works_with_their_own_token(
    user_gateway: GatewayServer, upstream: FakeOpenAI, upstream_mcp: OAuthMcpServer
) -> None:
    # Nobody has authorized: the server's tools are unknown, so it offers its authorize tool.
    upstream.enqueue(Reply(tool_calls=[("crm__authorize", {})]), Reply(text="open the link"))
    client = openai.OpenAI(base_url=user_gateway.base_url, api_key=user_gateway.mint())
    client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "connect"}], user="alice")
    offered = [t["function"]["name"] for t in upstream.requests[-2]["tools"]]
    assert offered == ["crm__authorize"]
    result = [m for m in upstream.requests[-1]["messages"] if m.get("role") == "tool"][-1]["content"]
    link = next(word for word in str(result).split() if word.startswith(f"{user_gateway.url}/oauth/upstream/authorize?"))
    link = link.rstrip('".,}')

    # Alice opens her link and signs in upstream as herself.
    done = sign_in_at_upstream(link, "alice@upstream")
    assert done.status_code == 200 and "connected for your account" in done.text

    # Bob, same organisation, has not: his call answers his own link, never Alice's account.
    bob_result = call_whoami(user_gateway, upstream, user="bob")
    assert "has not authorized" in bob_result and "/oauth/upstream/authorize?ticket=" in bob_result
    assert "alice" not in bob_result
    bob_link = next(w for w in bob_result.split() if "/oauth/upstream/authorize?" in w).rstrip('".,}')
    sign_in_at_upstream(bob_link, "bob@upstream")

    # Each runs with their own token: the upstream sees two different accounts.
    assert call_whoami(user_gateway, upstream, user="alice") == "account:alice@upstream"
    assert call_whoami(user_gateway, upstream, user="bob") == "account:bob@upstream"
    assert call_whoami(user_gateway, upstream, user="alice") == "account:alice@upstream"
    # A request naming no user cannot run a per-user tool.
    assert "names none" in call_whoami(user_gateway, upstream)

    admin = _admin(user_gateway)
    status = httpx.get(f"{user_gateway.url}/admin/v1/plugins/acme/crm/authorization", headers=admin).json()
    assert sorted(a["subject"] for a in status["authorizations"]) == ["alice", "bob"]
    # Forgetting Bob's authorization sends him back to the link; Alice is untouched.
    removed = httpx.delete(f"{user_gateway.url}/admin/v1/plugins/acme/crm/authorization", params={"subject": "bob"}, headers=admin)
    assert removed.json() == {"removed": 1}
    assert "has not authorized" in call_whoami(user_gateway, upstream, user="bob")
    assert call_whoami(user_gateway, upstream, user="alice") == "account:alice@upstream"


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_token_is_refreshed_before_it_expires(tmp_path: Path, upstream: FakeOpenAI, database: str) -> None:
    # Tokens living less than the refresh margin: plugway must refresh before sending one.
    lifetime = int(REFRESH_MARGIN_S) - 10
    upstream_mcp = OAuthMcpServer(token_lifetime_s=lifetime).start()
    try:
        for database_url in fresh_database(database, tmp_path, prefix="upstream_oauth"):
            refreshed_with(tmp_path, upstream, upstream_mcp, database_url)
    finally:
        upstream_mcp.stop()


def refreshed_with(tmp_path: Path, upstream: FakeOpenAI, upstream_mcp: OAuthMcpServer, database_url: str) -> None:
    for server in _gateway(tmp_path, upstream, {"url": upstream_mcp.mcp_url, "auth": {"type": "oauth"}}, database_url=database_url):
        authorize_organisation(server, _admin(server), "svc")
        wait_for_connection(server)
        assert call_whoami(server, upstream) == "account:svc"
        refreshes = upstream_mcp.accounts.refreshes
        assert refreshes, "the gateway sent the token without refreshing it"
        # The token replaced still had most of its life: refreshed ahead of expiry, not after a refusal.
        assert refreshes[0].old_token_remaining_s > 0
        assert server.gateway.mcp.upstream_auth.refreshes >= 1
        # The stored row was updated in place: still one grant, now holding the refreshed token (sealed).
        with server.gateway.engine.connect() as connection:
            rows = connection.execute(text("SELECT access_token FROM mcp_oauth_tokens")).all()
        assert len(rows) == 1
        assert not any(token in rows[0][0] for token in upstream_mcp.accounts.access)


def test_client_credentials_get_a_machine_token(tmp_path: Path, upstream: FakeOpenAI, upstream_mcp: OAuthMcpServer) -> None:
    auth = {
        "type": "client_credentials",
        "client_id": CC_CLIENT_ID,
        "client_secret": CC_CLIENT_SECRET,
        "token_url": f"{upstream_mcp.base_url}/cc-token",
    }
    for server in _gateway(tmp_path, upstream, {"url": upstream_mcp.mcp_url, "auth": auth}):
        wait_for_connection(server)
        assert call_whoami(server, upstream) == "account:service:machine"


def test_oauth_configuration_is_checked_at_load(tmp_path: Path) -> None:
    def load(mcp: dict[str, Any], **top: Any) -> None:
        settings_from_dict({"organisations": [{"id": "a", "plugins": [{"id": "p", "mcp": mcp}]}], **top})

    with pytest.raises(ConfigError, match=r"organisations\[0\]\.plugins\[0\]\.mcp\.auth: .*secrets_key"):
        load({"url": "http://127.0.0.1:1/mcp", "auth": {"type": "oauth"}})
    with pytest.raises(ConfigError, match="oauth_server.public_url"):
        load({"url": "http://127.0.0.1:1/mcp", "auth": {"type": "oauth", "per_user": True}}, secrets_key=SECRETS_KEY)
    with pytest.raises(ConfigError, match="client_id"):
        load({"url": "http://127.0.0.1:1/mcp", "auth": {"type": "client_credentials"}})
    with pytest.raises(ConfigError, match="over HTTP"):
        load({"command": ["x"], "auth": {"type": "oauth"}}, secrets_key=SECRETS_KEY)
    with pytest.raises(ConfigError, match="secrets_key: .*empty"):
        load({"url": "http://127.0.0.1:1/mcp"}, secrets_key=" ")


def test_an_idle_end_users_connection_is_closed_and_opened_again_on_their_next_call(
    user_gateway: GatewayServer, upstream: FakeOpenAI, upstream_mcp: OAuthMcpServer
) -> None:
    for user, tool in (("alice", "crm__authorize"), ("bob", "crm__whoami")):
        link = call_whoami(user_gateway, upstream, user=user, tool=tool)
        sign_in_at_upstream(next(w for w in link.split() if "/oauth/upstream/authorize?" in w).rstrip('".,}'), f"{user}@upstream")
        assert call_whoami(user_gateway, upstream, user=user) == f"account:{user}@upstream"
    ref = user_gateway.settings.organisations[0].plugins[0]
    manager = user_gateway.gateway.mcp
    assert manager.connection_health(ref, organisation="acme")["user_connections"] == 2
    # Health (and the metrics labelled from it) has one entry for the server, not one per user.
    assert [key for key in manager.health() if key.startswith("crm")] == ["crm"]
    manager.user_idle_s = 0.0  # every connection but the one in use is idle now
    assert call_whoami(user_gateway, upstream, user="bob") == "account:bob@upstream"
    assert manager.connection_health(ref, organisation="acme")["user_connections"] == 1
    # Alice's connection opens again for her next call, with her own token; the tools stayed offered.
    assert call_whoami(user_gateway, upstream, user="alice") == "account:alice@upstream"


def test_an_endpoint_call_names_its_end_user_for_a_per_user_server(
    tmp_path: Path, upstream: FakeOpenAI, upstream_mcp: OAuthMcpServer
) -> None:
    crm = {"id": "crm", "mcp": {"url": upstream_mcp.mcp_url, "auth": {"type": "oauth", "per_user": True}}}
    shop = {"id": "shop", "plugins": [crm], "endpoints": [{"slug": "helper", "model": "gpt-test", "plugins": ["crm"]}]}
    for server in _gateway(tmp_path, upstream, {"url": upstream_mcp.mcp_url}, extra_orgs=[shop]):
        upstream.enqueue(Reply(tool_calls=[("crm__authorize", {})]), Reply(text="here is your link"))
        answered = httpx.post(
            f"{server.url}/api/shop/helper",
            json={"message": "connect my CRM", "user": "carol"},
            headers={"Authorization": f"Bearer {server.mint('shop')}"},
            timeout=20,
        )
        assert answered.status_code == 200, answered.text
        result = str([m for m in upstream.requests[-1]["messages"] if m.get("role") == "tool"][-1]["content"])
        link = next(w for w in result.split() if "/oauth/upstream/authorize?" in w).rstrip('".,}')
        sign_in_at_upstream(link, "carol@upstream")
        status = httpx.get(f"{server.url}/admin/v1/plugins/shop/crm/authorization", headers=_admin(server)).json()
        assert [a["subject"] for a in status["authorizations"]] == ["carol"]


def test_plugins_list_uses_the_stored_authorization(org_gateway: GatewayServer, upstream_mcp: OAuthMcpServer) -> None:
    from runtime.mcp.cli import list_plugins
    from tests.support import test_plugins

    before = next(row for row in list_plugins(org_gateway.settings, test_plugins(), connect_timeout_s=5) if row["plugin_id"] == "crm")
    assert "not authorized" in str(before)
    authorize_organisation(org_gateway, _admin(org_gateway), "svc")
    after = next(row for row in list_plugins(org_gateway.settings, test_plugins(), connect_timeout_s=5) if row["plugin_id"] == "crm")
    assert "whoami" in str(after), after


def test_a_grant_revoked_upstream_sends_the_user_back_to_the_link(
    user_gateway: GatewayServer, upstream: FakeOpenAI, upstream_mcp: OAuthMcpServer
) -> None:
    link = call_whoami(user_gateway, upstream, user="dora", tool="crm__authorize")
    sign_in_at_upstream(next(w for w in link.split() if "/oauth/upstream/authorize?" in w).rstrip('".,}'), "dora@upstream")
    assert call_whoami(user_gateway, upstream, user="dora") == "account:dora@upstream"
    # Dora disconnects plugway at the upstream: its access and refresh tokens stop working.
    upstream_mcp.accounts.revoke_everything_of("dora@upstream")
    result = call_whoami(user_gateway, upstream, user="dora")
    assert "has not authorized" in result or "refused by its authorization server" in result, result
    # Her stored grant is gone, so her next call answers the link to authorize again.
    assert "/oauth/upstream/authorize?ticket=" in call_whoami(user_gateway, upstream, user="dora")


def test_an_authorization_forgotten_in_one_process_stops_being_used_in_another(
    tmp_path: Path, upstream: FakeOpenAI, upstream_mcp: OAuthMcpServer, org_gateway: GatewayServer
) -> None:
    """Each process caches tokens; it reads the database again at least every key_cache_ttl_s."""
    admin = _admin(org_gateway)
    authorize_organisation(org_gateway, admin, "svc")
    # A second gateway process on the same database (0 s: it reads the database on every call).
    other = _gateway(tmp_path / "other", upstream, {"url": upstream_mcp.mcp_url, "auth": {"type": "oauth"}}, database_url=org_gateway.settings.database_url, key_cache_ttl_s=0)
    second = next(other)
    try:
        wait_for_connection(second)
        assert call_whoami(second, upstream) == "account:svc"
        forgotten = httpx.delete(f"{org_gateway.url}/admin/v1/plugins/acme/crm/authorization", headers=admin, timeout=10)
        assert forgotten.json() == {"removed": 1}
        result = call_whoami(second, upstream)
        assert "not authorized" in result and "account:svc" not in result, result
    finally:
        other.close()


def test_a_whatsapp_contact_is_the_end_user(user_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    """The WhatsApp worker's call (Gateway.complete, as workers/whatsapp/worker.py makes it) runs as the contact."""
    import asyncio

    from workers.whatsapp.worker import whatsapp_user

    upstream.enqueue(Reply(tool_calls=[("crm__authorize", {})]), Reply(text="open the link"))
    completion = user_gateway.gateway.complete(
        organisation_id="acme",
        model="gpt-test",
        messages=[{"role": "user", "content": "connect my CRM"}],
        plugin_ids=["crm"],
        request_id="wa-test-1",
        source="whatsapp",
        end_user=whatsapp_user("+15551230000"),
    )
    asyncio.run_coroutine_threadsafe(completion, user_gateway._server_loop()).result(timeout=30)
    result = str([m for m in upstream.requests[-1]["messages"] if m.get("role") == "tool"][-1]["content"])
    link = next(w for w in result.split() if "/oauth/upstream/authorize?" in w).rstrip('".,}')
    sign_in_at_upstream(link, "wa-contact@upstream")
    status = httpx.get(f"{user_gateway.url}/admin/v1/plugins/acme/crm/authorization", headers=_admin(user_gateway)).json()
    assert [a["subject"] for a in status["authorizations"]] == ["whatsapp:+15551230000"]


async def test_on_mcp_the_oauth_subject_is_the_end_user(user_gateway: GatewayServer) -> None:
    """An MCP client signed in to /mcp with OAuth runs a per-user server as the person who consented."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    from tests.mcp_oauth.test_mcp_oauth import code_for, exchange, pkce, register

    admin_key, _ = mint_admin_key(user_gateway.gateway.engine, name="consenting-admin")
    client_id = register(user_gateway)["client_id"]
    verifier, challenge = pkce()
    token = exchange(user_gateway, client_id, code_for(user_gateway, admin_key, client_id, challenge), verifier).json()["access_token"]

    async def call(tool: str) -> str:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=20) as http:
            async with Client(streamable_http_client(f"{user_gateway.url}/mcp", http_client=http)) as client:  # type: ignore[arg-type]
                result = await client.call_tool(tool, {})
                return str(result.content[0].text)  # type: ignore[union-attr]

    answer = await call("crm__authorize")
    link = next(w for w in answer.split() if "/oauth/upstream/authorize?" in w).rstrip('".,}')
    await asyncio.to_thread(sign_in_at_upstream, link, "admin@upstream")
    url = f"{user_gateway.url}/admin/v1/plugins/acme/crm/authorization"
    status = (await asyncio.to_thread(httpx.get, url, headers=_admin(user_gateway))).json()
    [subject] = [a["subject"] for a in status["authorizations"]]
    assert subject.startswith("mcp:") and "consenting-admin" in subject


def mcp_token(server: GatewayServer, name: str) -> str:
    """An access token for /mcp signed in with OAuth as a new admin key ``name`` (its subject names the end user)."""
    from tests.mcp_oauth.test_mcp_oauth import code_for, exchange, pkce, register

    admin_key, _ = mint_admin_key(server.gateway.engine, name=name)
    client_id = register(server)["client_id"]
    verifier, challenge = pkce()
    return str(exchange(server, client_id, code_for(server, admin_key, client_id, challenge), verifier).json()["access_token"])


async def call_on_mcp(server: GatewayServer, token: str, tool: str, mode: str = "auto", **options: Any) -> Any:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=20) as http:
        async with Client(streamable_http_client(f"{server.url}/mcp", http_client=http), mode=mode, **options) as client:  # type: ignore[arg-type]
            return await client.call_tool(tool, {})


def someone_authorized(server: GatewayServer, upstream: FakeOpenAI) -> None:
    """Alice authorizes over chat, so the server's own tools are offered (to everyone, each running as themselves)."""
    answer = call_whoami(server, upstream, user="alice", tool="crm__authorize")
    sign_in_at_upstream(next(w for w in answer.split() if "/oauth/upstream/authorize?" in w).rstrip('".,}'), "alice@upstream")
    assert call_whoami(server, upstream, user="alice") == "account:alice@upstream"


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_an_mcp_client_with_url_elicitation_is_shown_the_link_and_its_call_runs_once_the_user_authorized(
    user_gateway: GatewayServer, upstream: FakeOpenAI, mode: str
) -> None:
    import mcp_types as types

    await asyncio.to_thread(someone_authorized, user_gateway, upstream)
    token = mcp_token(user_gateway, "elicited-admin")
    shown: list[Any] = []

    async def open_the_link(context: Any, params: Any) -> Any:
        shown.append(params)
        # The client's user opens the link in a browser and signs in upstream as themselves.
        landed = await asyncio.to_thread(sign_in_at_upstream, params.url, "elicited@upstream")
        assert landed.status_code == 200 and "connected for your account" in landed.text
        return types.ElicitResult(action="accept")

    result = await call_on_mcp(user_gateway, token, "crm__whoami", mode, elicitation_callback=open_the_link)
    # The same call carried on as that user, with their new token.
    assert not result.is_error and result.content[0].text == "account:elicited@upstream"
    [question] = shown
    assert isinstance(question, types.ElicitRequestURLParams)
    assert question.url.startswith(f"{user_gateway.url}/oauth/upstream/authorize?ticket=")
    assert "crm" in question.message and question.url in question.message
    status = (await asyncio.to_thread(httpx.get, f"{user_gateway.url}/admin/v1/plugins/acme/crm/authorization", headers=_admin(user_gateway))).json()
    [subject] = [a["subject"] for a in status["authorizations"] if a["subject"] != "alice"]
    assert subject.startswith("mcp:") and "elicited-admin" in subject


@pytest.mark.parametrize("answer", ["no url elicitation", "decline"])
async def test_an_mcp_client_that_cannot_or_will_not_open_the_link_gets_it_as_the_tool_result(
    user_gateway: GatewayServer, upstream: FakeOpenAI, answer: str
) -> None:
    import mcp_types as types

    await asyncio.to_thread(someone_authorized, user_gateway, upstream)
    token = mcp_token(user_gateway, "unlinked-admin")

    async def decline(context: Any, params: Any) -> Any:
        return types.ElicitResult(action="decline")

    options = {"elicitation_callback": decline} if answer == "decline" else {}
    result = await call_on_mcp(user_gateway, token, "crm__whoami", **options)
    text_result = result.content[0].text
    assert result.is_error and "has not authorized crm" in text_result
    assert f"{user_gateway.url}/oauth/upstream/authorize?ticket=" in text_result and "alice" not in text_result
