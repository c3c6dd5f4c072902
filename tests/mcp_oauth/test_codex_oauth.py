"""Codex CLI (the real one, from ``make agents``) signs in to plugway's ``/mcp`` by OAuth:
``codex mcp login --no-browser`` prints the authorization URL, the test gives consent as the
console's page does and pastes the URL the browser would land on; then ``codex exec`` runs a
plugway tool with the token (the model is plugway's fake upstream, through ``/v1/responses``)."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from runtime.oauth.models import OAuthGrant
from runtime.storage.keys import mint_admin_key
from runtime.storage.models import UsageRecord
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.mcp_oauth.support import approve_over_http, consent_request_id
from tests.services import missing
from tests.support import Gateways, GatewayServer, make_settings

ROOT = Path(__file__).resolve().parents[2]
CODEX = Path(os.environ.get("PLUGWAY_CODEX", ROOT / ".agents" / "node_modules" / ".bin" / "codex"))


@pytest.fixture
def server(tmp_path: Path, upstream: FakeOpenAI) -> Iterator[GatewayServer]:
    # Codex registers (RFC 7591); documents are off as for any client on an offline gateway.
    settings = make_settings(tmp_path, upstream.base_url, key_cache_ttl_s=0, oauth_server={"client_metadata_documents": False})
    with Gateways() as started:
        yield started.start(settings)


def calculator_name(body: dict[str, Any]) -> str | None:
    for tool in body.get("tools") or ():
        name = str(tool.get("function", {}).get("name", ""))
        if name.endswith("calculator__evaluate"):
            return name
    return None


def model(body: dict[str, Any]) -> Reply:
    """Calls the plugway tool once it is offered, then answers with its result."""
    results = [m for m in body["messages"] if m.get("role") == "tool"]
    if results:
        return Reply(text=f"The calculator says {results[-1]['content']}")
    name = calculator_name(body)
    return Reply(tool_calls=[(name, {"expression": "6*7"})]) if name else Reply(text="no calculator offered")


def test_codex_signs_in_with_mcp_login_and_runs_a_plugway_tool_with_its_token(
    server: GatewayServer, upstream: FakeOpenAI, tmp_path: Path
) -> None:
    if not CODEX.is_file():
        missing(f"no Codex CLI at {CODEX}: `make agents` installs it")
    upstream.responder = model
    admin_key, _row = mint_admin_key(server.gateway.engine, name="codex-test")
    home = tmp_path / "codex"
    home.mkdir()
    (home / "config.toml").write_text(
        f"""model = "gpt-test"
model_provider = "plugway"

[model_providers.plugway]
name = "plugway"
base_url = "{server.url}/v1"
wire_api = "responses"
env_key = "PLUGWAY_KEY"

[mcp_servers.plugway]
url = "{server.url}/mcp"
"""
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "CODEX_HOME": str(home), "PLUGWAY_KEY": server.mint()}

    login = subprocess.Popen(
        [str(CODEX), "mcp", "login", "plugway", "--no-browser"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert login.stdout is not None and login.stdin is not None
    threading.Thread(target=lambda: [lines.put(line) for line in login.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        deadline = time.monotonic() + 60
        authorization_url = None
        while authorization_url is None and time.monotonic() < deadline:
            try:
                found = re.search(r"(http://127\.0\.0\.1:\d+/oauth/authorize\S+)", lines.get(timeout=0.5))
            except queue.Empty:
                continue
            authorization_url = found.group(1) if found else None
        assert authorization_url is not None, "codex mcp login printed no authorization URL"
        sent_back = approve_over_http(server, admin_key, consent_request_id(server, authorization_url), organisation="acme")
        login.stdin.write(sent_back + "\n")
        login.stdin.flush()
        assert login.wait(60) == 0
    finally:
        login.kill()
    listed = subprocess.run([str(CODEX), "mcp", "list"], env=env, capture_output=True, text=True, timeout=60).stdout
    assert re.search(r"plugway\s+\S+/mcp\s+.*OAuth", listed), listed

    done = subprocess.run(
        [str(CODEX), "exec", "--skip-git-repo-check", "What is 6*7? Use the calculator."],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert "42" in done.stdout, done.stdout + done.stderr

    with Session(server.gateway.engine) as db:
        grant = db.exec(select(OAuthGrant)).one()
    server.flush_usage()
    with Session(server.gateway.engine) as db:
        calls = list(db.exec(select(UsageRecord).where(UsageRecord.key_id == grant.key_id)))
    assert [(call.source, call.model, call.status) for call in calls] == [("mcp", "calculator__evaluate", "ok")]
