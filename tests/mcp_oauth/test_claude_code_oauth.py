"""Claude Code (the real CLI, from ``make agents``) adds plugway's ``/mcp`` by URL alone and signs in by OAuth.

Driven headless through its stream-json control protocol: ``mcp_authenticate`` answers the
authorization URL (dynamic client registration, PKCE, resource indicator), the test gives
consent as the console's page does and follows the redirect to Claude Code's loopback
callback; then a prompt makes the model call a plugway tool, which Claude Code runs over
``/mcp`` with its access token. The model is plugway's fake upstream, reached through
plugway's own Messages door.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlmodel import Session, select

from runtime.oauth.models import OAuthClient, OAuthGrant
from runtime.storage.keys import mint_admin_key
from runtime.storage.models import UsageRecord
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.mcp_oauth.support import (
    MetadataDocumentHost,
    approve_over_http,
    consent_request_id,
    loopback_resolver,
    make_tls,
)
from tests.services import missing
from tests.support import Gateways, GatewayServer, make_settings, wait_until

ROOT = Path(__file__).resolve().parents[2]
CLAUDE = Path(os.environ.get("PLUGWAY_CLAUDE_CODE", ROOT / ".agents" / "node_modules" / ".bin" / "claude"))
TOOL = "mcp__plugway__calculator__evaluate"
CIMD_HOST = "client.test"


class StreamJson:
    """A ``claude -p`` session speaking stream-json on stdin and stdout."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True, cwd=cwd
        )
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self.messages.put(json.loads(line))
            except json.JSONDecodeError:
                continue

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def until(self, wanted: Any, what: str, within_s: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            try:
                message = self.messages.get(timeout=0.5)
            except queue.Empty:
                continue
            if wanted(message):
                return message
        raise AssertionError(f"Claude Code sent no {what} within {within_s} s")

    def control(self, request_id: str, request: dict[str, Any]) -> dict[str, Any]:
        self.send({"type": "control_request", "request_id": request_id, "request": request})
        answer = self.until(
            lambda m: m.get("type") == "control_response" and m["response"].get("request_id") == request_id, f"answer to {request['subtype']}"
        )
        assert answer["response"]["subtype"] == "success", answer
        response: dict[str, Any] = answer["response"]["response"]
        return response

    def close(self) -> None:
        self.process.kill()
        self.process.wait(10)


def model(body: dict[str, Any]) -> Reply:
    """The upstream model: calls the plugway tool once it is offered, then answers with its result."""
    results = [m for m in body["messages"] if m.get("role") == "tool"]
    if results:
        return Reply(text=f"The calculator says {results[-1]['content']}")
    if any(tool.get("function", {}).get("name") == TOOL for tool in body.get("tools") or ()):
        return Reply(tool_calls=[(TOOL, {"expression": "6*7"})])
    return Reply(text="ok")


@pytest.fixture(params=["registration", "metadata-document"])
def registration(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def server(tmp_path: Path, upstream: FakeOpenAI, registration: str) -> Iterator[GatewayServer]:
    # Claude Code prefers its Client ID Metadata Document. Its own is on claude.ai, out of reach
    # here: the registration variant turns documents off (it registers instead), the document
    # variant points it at a copy served on loopback (MCP_OAUTH_CLIENT_METADATA_URL).
    settings = make_settings(
        tmp_path,
        upstream.base_url,
        key_cache_ttl_s=0,
        model_aliases={"claude-*": "gpt-test"},
        oauth_server={"client_metadata_documents": registration == "metadata-document", "client_metadata_private_hosts": True},
    )
    with Gateways() as started:
        yield started.start(settings)


@pytest.fixture
def metadata_document(server: GatewayServer, registration: str, tmp_path: Path) -> Iterator[str | None]:
    if registration != "metadata-document":
        yield None
        return
    tls = make_tls(tmp_path, CIMD_HOST)
    host = MetadataDocumentHost(tls, CIMD_HOST).start()
    fetcher = server.app.state.oauth_server.metadata_documents
    fetcher.resolve = loopback_resolver(CIMD_HOST)
    fetcher.ssl_context = tls.context()
    # As claude.ai publishes Claude Code's: a public client coming back to a loopback /callback.
    url = host.publish(
        "/oauth/claude-code-client-metadata",
        {
            "client_name": "Claude Code",
            "redirect_uris": ["http://localhost/callback", "http://127.0.0.1/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        },
    )
    yield url
    host.stop()


def test_claude_code_signs_in_by_url_alone_and_runs_a_plugway_tool_with_its_token(
    server: GatewayServer, upstream: FakeOpenAI, tmp_path: Path, metadata_document: str | None
) -> None:
    if not CLAUDE.is_file():
        missing(f"no Claude Code at {CLAUDE}: `make agents` installs it")
    upstream.responder = model
    admin_key, _row = mint_admin_key(server.gateway.engine, name="claude-code-test")
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "ANTHROPIC_BASE_URL": server.url,
        "ANTHROPIC_AUTH_TOKEN": server.mint(),
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "BROWSER": "/bin/true",
        # MCP tools offered to the model directly, not behind Claude Code's tool search.
        "ENABLE_TOOL_SEARCH": "false",
    }
    if metadata_document is not None:
        env["MCP_OAUTH_CLIENT_METADATA_URL"] = metadata_document
    config = {"mcpServers": {"plugway": {"type": "http", "url": f"{server.url}/mcp"}}}
    session = StreamJson(
        [
            str(CLAUDE),
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
            "--mcp-config",
            json.dumps(config),
            "--allowedTools",
            TOOL,
        ],
        env,
        tmp_path,
    )
    try:
        status = session.control("status-1", {"subtype": "mcp_status"})
        assert [entry["status"] for entry in status["mcpServers"]] != ["connected"]

        started = session.control("auth", {"subtype": "mcp_authenticate", "serverName": "plugway"})
        assert started["authUrl"].startswith(f"{server.url}/oauth/authorize?")
        client_id = parse_qs(urlsplit(started["authUrl"]).query)["client_id"][0]
        assert (client_id == metadata_document) if metadata_document else not client_id.startswith("https://")
        sent_back = approve_over_http(server, admin_key, consent_request_id(server, started["authUrl"]), organisation="acme")
        assert httpx.get(sent_back).status_code == 200  # Claude Code's loopback callback

        def connected() -> dict[str, Any] | None:
            servers = session.control(f"status-{time.monotonic()}", {"subtype": "mcp_status"})["mcpServers"]
            return servers[0] if servers[0]["status"] == "connected" else None

        plugway = wait_until(connected, "Claude Code connected to plugway after signing in", within_s=30)
        assert "calculator__evaluate" in [tool["name"] for tool in plugway["tools"]]

        session.send({"type": "user", "message": {"role": "user", "content": "What is 6*7? Use the calculator."}})
        result = session.until(lambda m: m.get("type") == "result", "result", within_s=120)
        assert "42" in result.get("result", ""), result
    finally:
        session.close()

    # The call reached /mcp with the OAuth token: recorded under the grant's key.
    with Session(server.gateway.engine) as db:
        grant = db.exec(select(OAuthGrant)).one()
        registered = db.exec(select(OAuthClient)).all()
    assert grant.client_id == client_id and len(registered) == (0 if metadata_document else 1)
    server.flush_usage()
    with Session(server.gateway.engine) as db:
        calls = list(db.exec(select(UsageRecord).where(UsageRecord.key_id == grant.key_id)))
    assert [(call.source, call.model, call.status) for call in calls] == [("mcp", "calculator__evaluate", "ok")]

