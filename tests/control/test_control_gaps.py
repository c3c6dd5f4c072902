"""The control plane's promises the first tests left out: every front door honours a key's scopes and
allow-list, key changes reach other gateways, WhatsApp over the API, MCP health, usage groups, the
audit trail, admin keys revoked from the CLI, the OpenAPI schema, and `plugway serve --config`."""

from __future__ import annotations

import importlib
import pkgutil
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from fastapi.routing import APIRoute

import runtime.control.routes as control_routes
from tests.cli.runner import PLUGWAY, plugway, plugway_env, write_config
from tests.control.conftest import ORGS, Admin
from tests.fakes.graph_api import FakeGraphAPI
from tests.fakes.openai_server import FakeOpenAI, Reply, free_port
from tests.support import GatewayServer, make_settings
from workers.whatsapp.payloads import SIGNATURE_HEADER, change, delivery, encode, sign, text_message

HI = [{"role": "user", "content": "hi"}]


def eventually(predicate: Callable[[], bool], what: str, *, within_s: float = 20) -> None:
    """Poll until ``predicate`` holds; the bound only stops a broken build from hanging."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sqlite_only() -> pytest.MarkDecorator:
    return pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


# -- scopes and model allow-lists on every front door ------------------------------------------------


@sqlite_only()
def test_scopes_and_allow_lists_hold_on_responses_messages_and_endpoints(server: GatewayServer, admin: Admin, upstream: FakeOpenAI) -> None:
    embeddings_only = admin.post("/keys", json={"organisation": "shop", "scopes": ["embeddings"]}).json()["key"]
    other_model_only = admin.post("/keys", json={"organisation": "shop", "scopes": ["chat"], "models": ["gpt-other"]}).json()["key"]
    upstream.responder = lambda _body: Reply(text="fine")
    # What the allow-list admits still works on both front doors...
    assert openai.OpenAI(base_url=server.base_url, api_key=other_model_only, max_retries=0).responses.create(model="gpt-other", input="hi").output_text == "fine"
    claude = anthropic.Anthropic(base_url=server.url, api_key=other_model_only, max_retries=0)
    assert claude.messages.create(model="gpt-other", max_tokens=10, messages=HI).content[0].text == "fine"  # type: ignore[arg-type,union-attr]
    answered = len(upstream.requests)
    # ...while a missing scope or a model outside the list is refused, each in its front door's envelope.
    for key in (embeddings_only, other_model_only):
        with pytest.raises(openai.PermissionDeniedError) as responses:
            openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0).responses.create(model="gpt-test", input="hi")
        assert responses.value.body["code"] == "insufficient_permissions"  # type: ignore[index]
        with pytest.raises(anthropic.PermissionDeniedError) as messages:
            anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0).messages.create(model="gpt-test", max_tokens=10, messages=HI)  # type: ignore[arg-type]
        assert messages.value.body["type"] == "error" and messages.value.body["error"]["type"] == "permission_error"  # type: ignore[index]
    # yaml-helper runs gpt-test, which this key may not use.
    endpoint = httpx.post(f"{server.url}/api/shop/yaml-helper", json={"message": "x"}, headers=bearer(other_model_only), timeout=20)
    assert endpoint.status_code == 403 and endpoint.json()["code"] == "insufficient_permissions"
    assert len(upstream.requests) == answered


# -- key changes reach every gateway within key_cache_ttl_s --------------------------------------------


def test_key_changes_reach_another_gateway_within_the_cache_ttl(tmp_path: Path, upstream: FakeOpenAI, database_url: str) -> None:
    settings = make_settings(tmp_path, upstream.base_url, database_url=database_url, extra_orgs=ORGS, key_cache_ttl_s=1)
    here = GatewayServer(settings).start()
    elsewhere = GatewayServer(settings).start()
    admin = Admin(here)
    try:
        made = admin.post("/keys", json={"organisation": "shop"}).json()
        upstream.responder = lambda _body: Reply(text="ok")
        client = openai.OpenAI(base_url=elsewhere.base_url, api_key=made["key"], max_retries=0, timeout=20)

        def status() -> int:
            try:
                client.chat.completions.create(model="gpt-test", messages=HI)  # type: ignore[arg-type]
            except openai.APIStatusError as exc:
                return exc.status_code
            return 200

        assert status() == 200  # the other gateway has the key cached now
        assert admin.patch(f"/keys/{made['id']}", json={"rpm": 1}).status_code == 200
        eventually(lambda: status() == 429, "the other gateway applies the new rpm")
        revoked = admin.delete(f"/keys/{made['id']}").json()
        assert revoked["takes_effect_within_s"] == 1
        eventually(lambda: status() == 401, "the other gateway refuses the revoked key")
    finally:
        admin.client.close()
        elsewhere.stop()
        here.stop()


# -- WhatsApp through the API: conversations, and a dead letter answered once ---------------------------

NUMBER, TOKEN, APP_SECRET, SENDER = "106540352242922", "EAAG-shop", "shop-app-secret", "447700900123"


@pytest.fixture(scope="module")
def graph() -> Iterator[FakeGraphAPI]:
    server = FakeGraphAPI(tokens={NUMBER: TOKEN}).start()
    yield server
    server.stop()


@pytest.fixture
def whatsapp_server(tmp_path: Path, upstream: FakeOpenAI, database_url: str, graph: FakeGraphAPI) -> Iterator[GatewayServer]:
    graph.sends.clear()
    app = {
        "id": "shop-support", "organisation": "shop", "phone_number_id": NUMBER, "access_token": TOKEN, "app_secret": APP_SECRET,
        "verify_token": "verify", "model": "gpt-test", "enabled_plugin_ids": ["calculator"],
    }
    settings = make_settings(
        tmp_path, upstream.base_url, database_url=database_url, extra_orgs=ORGS, whatsapp={"graph_api_base": graph.base_url, "apps": [app], "poll_interval_s": 0.05}
    )
    server = GatewayServer(settings, run_worker=True).start()
    yield server
    server.stop()


def test_whatsapp_conversations_and_a_requeued_dead_letter_answered_once(whatsapp_server: GatewayServer, graph: FakeGraphAPI, upstream: FakeOpenAI) -> None:
    admin = Admin(whatsapp_server)

    def receive(text: str) -> None:
        body = encode(delivery(change(NUMBER, messages=[text_message(SENDER, text)])))
        response = httpx.post(f"{whatsapp_server.url}/webhooks/whatsapp", content=body, headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(APP_SECRET, body)})
        assert response.status_code == 200, response.text

    conversation = f"shop-support:{SENDER}"

    def messages() -> list[dict[str, Any]]:
        found = admin.get(f"/whatsapp/conversations/{conversation}/messages")
        return list(found.json()["data"]) if found.status_code == 200 else []

    def statuses() -> list[str]:
        return [m["status"] for m in messages()]

    try:
        upstream.enqueue(Reply(tool_calls=[("calculator__evaluate", {"expression": "6*7"})]), Reply(text="It is 42."))
        receive("What is 6 * 7?")
        eventually(lambda: statuses() == ["answered"], "the first message is answered")
        graph.fail_next(131026)  # undeliverable: not retried, a dead letter
        upstream.enqueue(Reply(text="Your order ships today."))
        receive("Where is my order?")
        eventually(lambda: statuses() == ["answered", "failed"], "the second message is a dead letter")

        (listed,) = admin.get("/whatsapp/conversations").json()["data"]
        assert (listed["conversation"], listed["app"], listed["sender"], listed["messages"]) == (conversation, "shop-support", SENDER, 2)
        answered, dead = messages()
        assert (answered["text"], [part["text"] for part in answered["sent"]]) == ("What is 6 * 7?", ["It is 42."])
        assert [call["name"] for call in answered["trace"]["tool_calls"]] == ["calculator__evaluate"]
        assert (dead["text"], dead["reply"], dead["sent"]) == ("Where is my order?", "Your order ships today.", [])
        assert "131026" in dead["error"]
        assert graph.texts_to(SENDER) == ["It is 42."]

        results: list[int] = []
        requeues = [threading.Thread(target=lambda: results.append(admin.client.post(f"/whatsapp/dead-letters/{dead['id']}/requeue").status_code)) for _ in range(4)]
        for thread in requeues:
            thread.start()
        for thread in requeues:
            thread.join()
        assert sorted(results) == [200, 409, 409, 409]
        eventually(lambda: statuses() == ["answered", "answered"], "the requeued message is answered")
        # One send for it, of the reply saved before the failure: the model was not asked again.
        assert graph.texts_to(SENDER) == ["It is 42.", "Your order ships today."]
        assert len(upstream.requests) == 3
        assert admin.post(f"/whatsapp/dead-letters/{dead['id']}/requeue").status_code == 409
        assert admin.get("/whatsapp/dead-letters").json()["data"] == []
        (audited,) = admin.get("/audit", params={"action": "whatsapp.requeue"}).json()["data"]
        assert audited["target"] == str(dead["id"])
    finally:
        admin.client.close()


# -- plugins: MCP health, and a tool call counted as admin usage -------------------------------------------


def test_mcp_plugin_health_and_a_tool_call_recorded_as_admin_usage(tmp_path: Path, upstream: FakeOpenAI) -> None:
    plugins = [
        {"id": "crm", "mcp": {"command": [sys.executable, "-m", "mcp_servers.support_crm"], "env": {"SUPPORT_CRM_DB": str(tmp_path / "crm.db")}}},
        {"id": "gone", "mcp": {"url": f"http://127.0.0.1:{free_port()}/mcp"}},
    ]
    server = GatewayServer(make_settings(tmp_path, upstream.base_url, extra_orgs=[{"id": "support", "plugins": plugins}])).start()
    admin = Admin(server)
    try:
        listed = {p["id"]: p for p in admin.get("/plugins", params={"organisation": "support"}).json()["data"]}
        crm, gone = listed["crm"], listed["gone"]
        assert (crm["kind"], crm["health"]["healthy"], crm["health"]["state"]) == ("mcp", True, "ready")
        assert "lookup_customer" in [tool["tool"] for tool in crm["tools"]]
        assert gone["kind"] == "mcp" and gone["health"]["healthy"] is False and gone["health"]["error"] and gone["tools"] == []
        organisation = admin.get("/organisations/support").json()
        assert {p["id"]: p["health"]["healthy"] for p in organisation["plugins"]} == {"crm": True, "gone": False}

        done = admin.post("/plugins/support/crm/tools/lookup_customer/call", json={"arguments": {"query": "C-1002"}}).json()
        assert done["ok"] is True and "Jonas Becker" in done["content"]
        by_source = admin.get("/usage", params={"organisation": "support", "group_by": "source"}).json()["data"]
        assert [(row["group"], row["requests"], row["errors"]) for row in by_source] == [("admin", 1, 0)]
        by_model = admin.get("/usage", params={"organisation": "support", "group_by": "model"}).json()["data"]
        assert [row["group"] for row in by_model] == [done["tool"]]
    finally:
        admin.client.close()
        server.stop()


# -- usage by endpoint, organisation and source; the audit trail of endpoints and the playground ----------


def test_usage_groups_and_audit_rows_for_endpoints_and_the_playground(server: GatewayServer, admin: Admin, upstream: FakeOpenAI) -> None:
    upstream.responder = lambda _body: Reply(text="ok", prompt_tokens=10, completion_tokens=5)
    key = admin.post("/keys", json={"organisation": "shop"}).json()["key"]
    assert admin.post("/endpoints", json={"organisation": "shop", "slug": "faq", "model": "gpt-test", "plugins": []}).status_code == 201
    for slug in ("faq", "faq", "yaml-helper"):
        called = httpx.post(f"{server.url}/api/shop/{slug}", json={"message": "hours?"}, headers=bearer(key), timeout=20)
        assert called.status_code == 200, called.text
    openai.OpenAI(base_url=server.base_url, api_key=server.mint("acme"), max_retries=0).chat.completions.create(model="gpt-test", messages=HI)  # type: ignore[arg-type]
    with admin.stream("POST", "/playground", json={"organisation": "shop", "endpoint": "faq", "messages": HI}) as played:
        assert "event: done" in played.read().decode()
    assert admin.patch("/endpoints/shop/faq", json={"description": "Opening hours", "system_prompt": "secret prompt"}).status_code == 200
    assert admin.delete("/endpoints/shop/faq").status_code == 200

    def usage(group_by: str, **params: str) -> dict[Any, tuple[int, int]]:
        rows = admin.get("/usage", params={"group_by": group_by, **params}).json()["data"]
        return {row["group"]: (row["requests"], row["total_tokens"]) for row in rows}

    assert usage("endpoint", organisation="shop") == {"faq": (3, 45), "yaml-helper": (1, 15)}
    assert usage("organisation") == {"acme": (1, 15), "shop": (4, 60)}
    assert usage("source") == {"api": (1, 15), "console": (1, 15), "endpoint": (3, 45)}

    events = admin.get("/audit").json()["data"]
    assert [e["action"] for e in events] == ["endpoint.delete", "endpoint.update", "playground.chat", "endpoint.create", "key.create"]
    assert all(e["actor"].startswith(admin.row.id) for e in events)
    assert {e["target"] for e in events[:4]} == {"shop/faq"}
    assert events[1]["details"] == {"description": "Opening hours"}  # the prompt is left out


# -- a revoked admin key, and what `plugway serve --config` prints -----------------------------------------


def test_serve_with_a_config_prints_the_console_and_a_cli_revoked_admin_key_is_refused(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        f"database_url: sqlite:///{tmp_path / 'p.db'}\nkey_cache_ttl_s: 1\nproviders: [{{id: demo, kind: demo}}]\n"
        "models: [{id: demo, provider: demo}]\norganisations: [{id: acme}]\n",
    )
    port = free_port()
    process = subprocess.Popen(
        [*PLUGWAY, "serve", "--config", str(config), "--port", str(port), "--no-worker"],
        cwd=tmp_path, env=plugway_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not any("Uvicorn running" in line for line in lines) and process.poll() is None and time.monotonic() < deadline:
            lines.append(process.stdout.readline())
        output = "".join(lines)
        (announced,) = [line for line in lines if line.startswith("The console: ")]
        console = f"http://127.0.0.1:{port}/console"
        assert announced.split()[2] == console, output
        assert httpx.get(console, timeout=10).status_code == 200
        # The command it prints mints a key that opens the API...
        command = shlex.split(announced.split("mint one with: ", 1)[1].rstrip(")\n"))
        assert command[:4] == ["plugway", "admin", "keys", "create"], announced
        minted = subprocess.run([*PLUGWAY, *command[1:]], cwd=tmp_path, env=plugway_env(), capture_output=True, text=True, timeout=60)
        assert minted.returncode == 0, minted.stderr
        admin_key = minted.stdout.strip().splitlines()[-1]
        organisations = f"http://127.0.0.1:{port}/admin/v1/organisations"
        assert httpx.get(organisations, headers=bearer(admin_key), timeout=10).status_code == 200
        # ...until `plugway admin keys revoke` withdraws it.
        listed = plugway("admin", "keys", "list", "--config", str(config), cwd=tmp_path)
        assert plugway("admin", "keys", "revoke", listed.stdout.split()[0], "--config", str(config), cwd=tmp_path).returncode == 0
        eventually(lambda: httpx.get(organisations, headers=bearer(admin_key), timeout=10).status_code != 200, "the revoked admin key is refused")
        refused = httpx.get(organisations, headers=bearer(admin_key), timeout=10)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    finally:
        process.terminate()
        process.wait(timeout=20)


# -- the OpenAPI schema documents /admin/v1 ------------------------------------------------------------------

BODIES = {
    ("/admin/v1/keys", "post"): "KeyCreate",
    ("/admin/v1/keys/{key_id}", "patch"): "KeyUpdate",
    ("/admin/v1/endpoints", "post"): "EndpointCreate",
    ("/admin/v1/endpoints/{organisation}/{slug}", "patch"): "EndpointUpdate",
    ("/admin/v1/plugins/{organisation_id}/{plugin_id}/tools/{tool}/call", "post"): "ToolCall",
    ("/admin/v1/playground", "post"): "PlaygroundRequest",
}


@sqlite_only()
def test_every_admin_route_and_its_body_is_in_the_openapi_schema(server: GatewayServer) -> None:
    schema = httpx.get(f"{server.url}/openapi.json", timeout=20).json()
    # Every route the control plane's resource modules declare (the app nests routers, so ask the modules).
    modules = [importlib.import_module(f"runtime.control.routes.{info.name}") for info in pkgutil.iter_modules(control_routes.__path__)]
    # WhatsApp's management routes live with the WhatsApp feature, under the same prefix.
    modules.append(importlib.import_module("workers.whatsapp.admin_routes"))
    routes = {
        (route.path_format, method.lower())
        for module in modules
        for route in module.router.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    }
    assert all(path.startswith("/admin/v1/") for path, _ in routes)
    documented = {(path, method) for path, operations in schema["paths"].items() if path.startswith("/admin/v1") for method in operations}
    assert documented == routes and len(routes) >= 20
    assert not [path for path in schema["paths"] if path.startswith("/console")]
    components = schema["components"]["schemas"]
    for (path, method), model in BODIES.items():
        body = schema["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
        assert body["$ref"] == f"#/components/schemas/{model}", (path, method)
    assert set(components["KeyCreate"]["properties"]) == {"organisation", "name", "rpm", "daily_tokens", "scopes", "models"}
    assert components["KeyCreate"]["required"] == ["organisation"]
    assert {"slug", "model", "organisation"} <= set(components["EndpointCreate"]["required"])
    assert components["KeyCreate"]["additionalProperties"] is False  # unknown fields are refused, and the schema says so
