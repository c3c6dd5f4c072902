"""The management API end to end: httpx -> a real gateway (SQLite and PostgreSQL) -> fake upstreams."""

from __future__ import annotations

import csv
import importlib
import io
import pkgutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from fastapi.routing import APIRoute

import runtime.control.routes as control_routes
from tests.control.conftest import ORGS, Admin
from tests.fakes.graph_api import FakeGraphAPI
from tests.fakes.openai_server import FakeOpenAI, Reply, free_port
from tests.support import Gateways, GatewayServer, make_settings, wait_until
from workers.whatsapp.payloads import SIGNATURE_HEADER, change, delivery, encode, sign, text_message

# -- who may use it --------------------------------------------------------------------------------


def test_only_admin_keys_open_the_api(server: GatewayServer, admin: Admin) -> None:
    url = f"{server.url}/admin/v1/organisations"
    missing = httpx.get(url)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
    gateway_key = httpx.get(url, headers={"Authorization": f"Bearer {server.mint('shop')}"})
    assert gateway_key.status_code == 403 and gateway_key.json()["error"]["code"] == "insufficient_permissions"
    assert httpx.get(url, headers={"Authorization": "Bearer pwa_not-a-key"}).status_code == 401
    assert admin.get("/organisations").status_code == 200
    # ...and an admin key opens no model route.
    refused = httpx.post(f"{server.base_url}/chat/completions", json={"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]}, headers={"Authorization": f"Bearer {admin.key}"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_permissions"


def test_organisations_show_models_plugins_endpoints_and_spend(admin: Admin) -> None:
    orgs = {o["id"]: o for o in admin.get("/organisations").json()["data"]}
    shop = orgs["shop"]
    assert shop["models"] == ["gpt-test", "gpt-other"]
    assert shop["plugins"] == [{"id": "calculator", "kind": "python", "origin": "builtin", "health": {"healthy": True, "state": "loaded", "error": None}}]
    assert shop["endpoints"] == [{"slug": "yaml-helper", "model": "gpt-test", "active": True, "source": "config"}]
    assert shop["spend_this_period_usd"] == 0
    assert admin.get("/organisations/nope").status_code == 404


# -- keys ------------------------------------------------------------------------------------------


def test_mint_use_update_and_revoke_a_key(server: GatewayServer, admin: Admin, upstream: FakeOpenAI) -> None:
    created = admin.post("/keys", json={"organisation": "shop", "name": "web", "rpm": 100, "scopes": ["chat"], "models": ["gpt-test"]})
    assert created.status_code == 201, created.text
    body = created.json()
    secret, key_id = body["key"], body["id"]
    assert secret.startswith("pw_") and (body["scopes"], body["models"], body["rpm"]) == (["chat"], ["gpt-test"], 100)
    listed = admin.get("/keys", params={"organisation": "shop"}).json()["data"]
    assert [k["id"] for k in listed] == [key_id] and all("key" not in k for k in listed)
    client = openai.OpenAI(base_url=server.base_url, api_key=secret, max_retries=0)
    upstream.enqueue(Reply(text="hello"))
    assert client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}], tools=[{"type": "function", "function": {"name": "x"}}]).choices[0].message.content == "hello"
    assert [m.id for m in client.models.list()] == ["gpt-test"]
    with pytest.raises(openai.PermissionDeniedError) as other_model:
        client.chat.completions.create(model="gpt-other", messages=[{"role": "user", "content": "hi"}])
    assert other_model.value.body["code"] == "insufficient_permissions"  # type: ignore[index]
    updated = admin.patch(f"/keys/{key_id}", json={"rpm": None, "models": None}).json()
    assert (updated["rpm"], updated["models"], updated["scopes"]) == (None, None, ["chat"])
    upstream.enqueue(Reply(text="now allowed"))
    assert client.chat.completions.create(model="gpt-other", messages=[{"role": "user", "content": "hi"}], tools=[{"type": "function", "function": {"name": "x"}}]).choices[0].message.content == "now allowed"
    revoked = admin.delete(f"/keys/{key_id}").json()
    assert revoked["revoked"] is True and revoked["revoked_at"]
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    assert admin.patch(f"/keys/{key_id}", json={"rpm": 5}).status_code == 409
    assert admin.get("/keys", params={"organisation": "shop"}).json()["data"] == []
    assert [k["id"] for k in admin.get("/keys", params={"organisation": "shop", "include_revoked": True}).json()["data"]] == [key_id]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"organisation": "nope"}, "organisation"),
        ({"organisation": "shop", "models": ["claude-unknown"]}, "models"),
        ({"organisation": "shop", "scopes": ["everything"]}, None),
        ({"organisation": "shop", "rpm": -1}, "rpm"),
        ({"organisation": "shop", "surprise": 1}, "surprise"),
    ],
)
def test_bad_key_requests_are_400(admin: Admin, body: dict[str, Any], param: str | None) -> None:
    response = admin.post("/keys", json=body)
    assert response.status_code == 400, response.text
    if param:
        assert param in (response.json()["error"]["param"] or "")


def test_a_key_outside_its_scopes_is_refused(server: GatewayServer, admin: Admin) -> None:
    embeddings_only = admin.post("/keys", json={"organisation": "shop", "scopes": ["embeddings"]}).json()["key"]
    refused = httpx.post(f"{server.base_url}/chat/completions", json={"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]}, headers={"Authorization": f"Bearer {embeddings_only}"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_permissions"
    endpoint = httpx.post(f"{server.url}/api/shop/yaml-helper", json={"message": "x"}, headers={"Authorization": f"Bearer {embeddings_only}"})
    assert endpoint.status_code == 403 and endpoint.json()["code"] == "insufficient_permissions"
    mcp = httpx.post(f"{server.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers={"Authorization": f"Bearer {embeddings_only}", "Accept": "application/json, text/event-stream"})
    assert mcp.status_code == 403


def test_lists_are_paginated(admin: Admin) -> None:
    made = [admin.post("/keys", json={"organisation": "shop", "name": f"k{i}"}).json()["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"organisation": "shop", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = admin.get("/keys", params=params).json()
        seen.extend(k["id"] for k in page["data"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(made) and len(seen) == 5 and pages == 3
    assert admin.get("/keys", params={"cursor": "garbage!"}).status_code == 400


# -- endpoints ------------------------------------------------------------------------------------


def test_an_endpoint_made_here_answers_on_another_gateway(tmp_path: Path, server: GatewayServer, admin: Admin, upstream: FakeOpenAI, database_url: str, gateways: Gateways) -> None:
    (tmp_path / "second").mkdir()
    other = gateways.start(database_url=database_url, extra_orgs=ORGS, directory=tmp_path / "second")
    key = server.mint("shop")
    created = admin.post("/endpoints", json={"organisation": "shop", "slug": "faq", "model": "gpt-test", "system_prompt": "Answer FAQs.", "plugins": []})
    assert created.status_code == 201, created.text
    upstream.enqueue(Reply(text="From the FAQ."))
    answer = httpx.post(f"{other.url}/api/shop/faq", json={"message": "hours?"}, headers={"Authorization": f"Bearer {key}"}, timeout=20)
    assert answer.status_code == 200, answer.text
    assert answer.json()["content"] == "From the FAQ." and upstream.requests[-1]["messages"][0]["content"] == "Answer FAQs."
    assert admin.patch("/endpoints/shop/faq", json={"active": False}).json()["active"] is False

    def refused() -> httpx.Response | None:
        answer = httpx.post(f"{other.url}/api/shop/faq", json={"message": "hours?"}, headers={"Authorization": f"Bearer {key}"}, timeout=20)
        return answer if answer.status_code == 404 else None

    gone = wait_until(refused, "the other gateway stops answering the deactivated endpoint", within_s=10)
    assert gone.json()["code"] == "endpoint_not_found"


def test_endpoint_rules(admin: Admin) -> None:
    assert admin.post("/endpoints", json={"organisation": "shop", "slug": "yaml-helper", "model": "gpt-test"}).status_code == 409
    read_only = admin.patch("/endpoints/shop/yaml-helper", json={"active": False})
    assert read_only.status_code == 409 and read_only.json()["error"]["code"] == "read_only"
    assert admin.delete("/endpoints/shop/yaml-helper").status_code == 409
    assert admin.post("/endpoints", json={"organisation": "shop", "slug": "x", "model": "no-model"}).status_code == 400
    assert admin.post("/endpoints", json={"organisation": "shop", "slug": "x", "model": "gpt-test", "plugins": ["not-configured"]}).status_code == 400
    assert admin.post("/endpoints", json={"organisation": "shop", "slug": "Bad Slug", "model": "gpt-test"}).status_code == 400
    made = admin.post("/endpoints", json={"organisation": "shop", "slug": "temp", "model": "gpt-test", "plugins": []})
    assert made.status_code == 201
    assert admin.post("/endpoints", json={"organisation": "shop", "slug": "temp", "model": "gpt-test"}).status_code == 409
    listed = {(e["slug"], e["source"], e["read_only"]) for e in admin.get("/endpoints", params={"organisation": "shop"}).json()["data"]}
    assert listed == {("yaml-helper", "config", True), ("temp", "api", False)}
    assert admin.delete("/endpoints/shop/temp").json()["deleted"] is True
    assert admin.get("/endpoints/shop/temp").status_code == 404


# -- usage, plugins, audit, health -------------------------------------------------------------------


def test_usage_by_model_key_day_and_csv(server: GatewayServer, admin: Admin, upstream: FakeOpenAI) -> None:
    keys = [admin.post("/keys", json={"organisation": "shop", "name": n}).json() for n in ("a", "b")]
    for key, model in ((keys[0], "gpt-test"), (keys[0], "gpt-other"), (keys[1], "gpt-test")):
        upstream.enqueue(Reply(text="ok", prompt_tokens=10, completion_tokens=5))
        openai.OpenAI(base_url=server.base_url, api_key=key["key"], max_retries=0).chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], tools=[{"type": "function", "function": {"name": "x"}}])
    by_model = {row["group"]: row for row in admin.get("/usage", params={"organisation": "shop", "group_by": "model"}).json()["data"]}
    assert (by_model["gpt-test"]["requests"], by_model["gpt-test"]["prompt_tokens"], by_model["gpt-other"]["completion_tokens"]) == (2, 20, 5)
    by_key = {row["group"]: row["requests"] for row in admin.get("/usage", params={"organisation": "shop", "group_by": "key"}).json()["data"]}
    assert by_key == {keys[0]["id"]: 2, keys[1]["id"]: 1}
    by_day = admin.get("/usage", params={"organisation": "shop", "group_by": "day"}).json()
    assert len(by_day["data"]) == 1 and by_day["totals"]["requests"] == 3 and len(by_day["data"][0]["group"]) == 10
    exported = admin.get("/usage", params={"organisation": "shop", "group_by": "model", "format": "csv"})
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert {r["group"]: int(r["requests"]) for r in rows} == {"gpt-other": 1, "gpt-test": 2}
    assert admin.get("/usage", params={"group_by": "planet"}).status_code == 400


def test_plugins_and_a_tool_call(admin: Admin) -> None:
    plugins = admin.get("/plugins", params={"organisation": "shop"}).json()["data"]
    (calculator,) = plugins
    (tool,) = calculator["tools"]
    assert tool["name"] == "calculator__evaluate" and tool["parameters"]["required"] == ["expression"]
    done = admin.post("/plugins/shop/calculator/tools/evaluate/call", json={"arguments": {"expression": "6*7"}}).json()
    assert done["ok"] is True and orjson.loads(done["content"])["result"] == 42
    bad = admin.post("/plugins/shop/calculator/tools/evaluate/call", json={"arguments": {"expr": 1}}).json()
    assert bad["ok"] is False and "schema" in bad["content"]
    assert admin.post("/plugins/shop/calculator/tools/nothing/call", json={}).status_code == 404


def test_every_admin_action_is_audited(admin: Admin) -> None:
    key = admin.post("/keys", json={"organisation": "shop"}).json()
    admin.patch(f"/keys/{key['id']}", json={"rpm": 10})
    admin.delete(f"/keys/{key['id']}")
    admin.post("/plugins/shop/calculator/tools/evaluate/call", json={"arguments": {"expression": "1+1"}})
    events = admin.get("/audit").json()["data"]
    assert [e["action"] for e in events] == ["plugin.call", "key.revoke", "key.update", "key.create"]
    assert all(e["actor"].startswith(admin.row.id) and e["source_ip"] == "127.0.0.1" and e["at"] for e in events)
    assert events[1]["target"] == key["id"] and events[2]["details"] == {"rpm": 10}
    first = admin.get("/audit", params={"limit": 2}).json()
    second = admin.get("/audit", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [e["action"] for e in first["data"] + second["data"]] == [e["action"] for e in events]


def test_the_health_view_has_the_details_readyz_leaves_out(admin: Admin) -> None:
    health = admin.get("/health").json()
    assert health["status"] == "ready" and health["checks"]["database"] == {"ok": True}


# -- the playground --------------------------------------------------------------------------------


def test_the_playground_streams_tool_cards_before_the_answer(admin: Admin, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("calculator__evaluate", {"expression": "6*7"})]), Reply(text="It is 42."))
    events: list[tuple[str, Any]] = []
    with admin.stream("POST", "/playground", json={"organisation": "shop", "model": "gpt-test", "messages": [{"role": "user", "content": "6*7?"}]}) as response:
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name:
                events.append((name, orjson.loads(line[6:])))
    names = [n for n, _ in events]
    assert names.index("tool_call") < names.index("tool_result") < names.index("text") < names.index("done")
    call = dict(events)["tool_call"]
    assert (call["plugin"], call["tool"]) == ("calculator", "evaluate")
    assert dict(events)["done"]["content"] == "It is 42."


# -- WhatsApp dead letters: requeued exactly once -----------------------------------------------------


def test_a_dead_letter_is_requeued_once(server: GatewayServer, admin: Admin) -> None:
    from sqlalchemy import insert

    from workers.whatsapp.models import WHATSAPP_TABLES, InboundStatus

    inbound = WHATSAPP_TABLES[0]
    with server.gateway.engine.begin() as conn:
        conn.execute(
            insert(inbound),
            {
                "app_id": "acme-support", "wamid": "wamid.dead1", "conversation_key": "acme-support:1555", "sender": "1555",
                "message_type": "text", "text": "help", "message_ts": 1, "received_at": 1.0, "status": InboundStatus.failed,
                "next_attempt_at": 0.0, "attempts": 5, "last_error": "graph: 131000", "reply_in_history": False, "raw": "{}",
            },
        )
    (letter,) = admin.get("/whatsapp/dead-letters").json()["data"]
    assert letter["requeueable"] is True and letter["error"] == "graph: 131000"
    results: list[int] = []

    def requeue() -> None:
        results.append(admin.client.post(f"/whatsapp/dead-letters/{letter['id']}/requeue").status_code)

    threads = [threading.Thread(target=requeue) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [200, 409, 409, 409]
    assert admin.get("/whatsapp/dead-letters").json()["data"] == []


def test_usage_filters_give_one_keys_daily_series_and_one_models_keys(server: GatewayServer, admin: Admin, upstream: FakeOpenAI) -> None:
    keys = [admin.post("/keys", json={"organisation": "shop", "name": n}).json() for n in ("a", "b")]
    for key, model, tokens in ((keys[0], "gpt-test", 10), (keys[0], "gpt-other", 20), (keys[1], "gpt-test", 40)):
        upstream.enqueue(Reply(text="ok", prompt_tokens=tokens, completion_tokens=1))
        client = openai.OpenAI(base_url=server.base_url, api_key=key["key"], max_retries=0)
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], tools=[{"type": "function", "function": {"name": "x"}}])
    one_key = admin.get("/usage", params={"group_by": "day", "key": keys[0]["id"]}).json()
    assert [(row["requests"], row["prompt_tokens"]) for row in one_key["data"]] == [(2, 30)]
    assert one_key["filters"] == {"key": keys[0]["id"]}
    by_key = admin.get("/usage", params={"group_by": "key", "model": "gpt-test", "organisation": "shop"}).json()
    assert {row["group"]: row["prompt_tokens"] for row in by_key["data"]} == {keys[0]["id"]: 10, keys[1]["id"]: 40}
    both = admin.get("/usage", params={"group_by": "model", "key": keys[1]["id"], "model": "gpt-other"}).json()
    assert both["data"] == [] and both["totals"]["requests"] == 0
    exported = admin.get("/usage", params={"group_by": "model", "key": keys[0]["id"], "format": "csv"})
    assert {r["group"]: int(r["prompt_tokens"]) for r in csv.DictReader(io.StringIO(exported.text))} == {"gpt-other": 20, "gpt-test": 10}


# -- every front door honours scopes, key changes reach other gateways, WhatsApp, MCP health, usage groups, audit, OpenAPI ---

HI = [{"role": "user", "content": "hi"}]


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


def test_key_changes_reach_another_gateway_within_the_cache_ttl(upstream: FakeOpenAI, database_url: str, gateways: Gateways) -> None:
    here = gateways.start(database_url=database_url, extra_orgs=ORGS, key_cache_ttl_s=1)
    elsewhere = gateways.start(here.settings)
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
        wait_until(lambda: status() == 429, "the other gateway applies the new rpm")
        revoked = admin.delete(f"/keys/{made['id']}").json()
        assert revoked["takes_effect_within_s"] == 1
        wait_until(lambda: status() == 401, "the other gateway refuses the revoked key")
    finally:
        admin.client.close()


# -- WhatsApp through the API: conversations, and a dead letter answered once ---------------------------

NUMBER, TOKEN, APP_SECRET, SENDER = "106540352242922", "EAAG-shop", "shop-app-secret", "447700900123"


@pytest.fixture(scope="module")
def graph() -> Iterator[FakeGraphAPI]:
    server = FakeGraphAPI(tokens={NUMBER: TOKEN}).start()
    yield server
    server.stop()


@pytest.fixture
def whatsapp_server(tmp_path: Path, upstream: FakeOpenAI, database_url: str, graph: FakeGraphAPI, gateways: Gateways) -> GatewayServer:
    graph.sends.clear()
    app = {
        "id": "shop-support", "organisation": "shop", "phone_number_id": NUMBER, "access_token": TOKEN, "app_secret": APP_SECRET,
        "verify_token": "verify", "model": "gpt-test", "enabled_plugin_ids": ["calculator"],
    }
    settings = make_settings(
        tmp_path, upstream.base_url, database_url=database_url, extra_orgs=ORGS, whatsapp={"graph_api_base": graph.base_url, "apps": [app], "poll_interval_s": 0.05}
    )
    return gateways.start(settings, run_worker=True)


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
        wait_until(lambda: statuses() == ["answered"], "the first message is answered")
        graph.fail_next(131026)  # undeliverable: not retried, a dead letter
        upstream.enqueue(Reply(text="Your order ships today."))
        receive("Where is my order?")
        wait_until(lambda: statuses() == ["answered", "failed"], "the second message is a dead letter")

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
        wait_until(lambda: statuses() == ["answered", "answered"], "the requeued message is answered")
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


def test_mcp_plugin_health_and_a_tool_call_recorded_as_admin_usage(tmp_path: Path, gateways: Gateways) -> None:
    plugins = [
        {"id": "crm", "mcp": {"command": [sys.executable, "-m", "mcp_servers.support_crm"], "env": {"SUPPORT_CRM_DB": str(tmp_path / "crm.db")}}},
        {"id": "gone", "mcp": {"url": f"http://127.0.0.1:{free_port()}/mcp"}},
    ]
    server = gateways.start(extra_orgs=[{"id": "support", "plugins": plugins}])
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
    # The OAuth feature's consent and grants, likewise.
    modules.append(importlib.import_module("runtime.oauth.routes"))
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
