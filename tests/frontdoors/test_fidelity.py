"""What cannot be carried is ignored, and said; model aliases; the probes coding agents make.

The requests below are the ones Codex CLI and Claude Code send on their first turn
(REFERENCE.md, "Coding agents as clients"), made with the official SDKs against the
offline demo model and against a fake OpenAI chat upstream.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from sqlmodel import Session, select

from runtime.json_types import JSON
from runtime.storage.models import UsageRecord
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.support import UPSTREAM_KEY, Gateways, GatewayServer, make_settings

IGNORED = "x-plugway-ignored-params"


@pytest.fixture(scope="module")
def fidelity_gateway(upstream_server: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("fidelity"),
        upstream_server.base_url,
        providers=[
            {"id": "upstream", "kind": "openai", "base_url": upstream_server.base_url, "api_key": UPSTREAM_KEY, "timeout_s": 10, "max_retries": 0},
            {"id": "demo", "kind": "demo"},
        ],
        models=[
            {"id": "gpt-test", "provider": "upstream", "upstream_model": "gpt-4o-mini"},
            {"id": "demo", "provider": "demo"},
            {"id": "strict-model", "provider": "upstream", "unsupported_params": "refuse"},
        ],
        model_aliases={"claude-opus-*": "demo", "gpt-5*": "gpt-test", "claude-haiku-4-5": "demo"},
        organisations=[
            {"id": "acme"},
            {"id": "strict", "unsupported_params": "refuse"},
            {"id": "own-aliases", "model_aliases": {"claude-opus-*": "gpt-test"}, "models": ["gpt-test", "demo"]},
        ],
    )
    with Gateways() as started:
        yield started.start(settings)


@pytest.fixture
def upstream(upstream_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    upstream_server.reset()
    yield upstream_server
    upstream_server.reset()


def openai_client(server: GatewayServer, org: str = "acme") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=server.mint(org), max_retries=0, timeout=20)


def anthropic_client(server: GatewayServer, org: str = "acme") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, auth_token=server.mint(org), max_retries=0, timeout=20)


# -- Codex CLI's request on /v1/responses ---------------------------------------------------------

CODEX_TOOLS: list[JSON] = [
    {"type": "function", "name": "exec_command", "description": "Runs a command.", "strict": False,
     "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}},
    {"type": "namespace", "name": "mcp__files", "description": "A file server.", "tools": [
        {"type": "function", "name": "read", "description": "Reads a file.",
         "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}},
    ]},
    {"type": "web_search", "external_web_access": False},
]
CODEX_IGNORED = "client_metadata, reasoning.summary, include[0], tools[2]"


def codex_request(model: str, **overrides: Any) -> JSON:
    return {
        "model": model,
        "instructions": "You are Codex.",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Sandbox: read-only."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What is in README.md?"}]},
        ],
        "tools": CODEX_TOOLS,
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"summary": "auto"},
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "0199-session",
        "extra_body": {"client_metadata": {"turn": '{"id": 1}'}},
        **overrides,
    }


@pytest.mark.parametrize("stream", [False, True])
def test_codex_first_request_is_answered_on_the_demo_model_naming_what_was_ignored(fidelity_gateway: GatewayServer, stream: bool) -> None:
    client = openai_client(fidelity_gateway)
    if stream:
        with client.responses.with_streaming_response.create(**codex_request("demo"), stream=True) as raw:
            assert raw.status_code == 200
            assert raw.headers[IGNORED] == CODEX_IGNORED
            events = [e.type for e in raw.parse()]
        assert events[-1] == "response.completed"
    else:
        raw_answer = client.responses.with_raw_response.create(**codex_request("demo"))
        assert raw_answer.headers[IGNORED] == CODEX_IGNORED
        assert raw_answer.parse().status == "completed"


def test_codex_request_reaches_a_chat_upstream_with_what_chat_can_carry(fidelity_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("mcp__files__read", {"path": "README.md"})]))
    raw = openai_client(fidelity_gateway).responses.with_raw_response.create(**codex_request("gpt-test", reasoning={"effort": "high", "summary": "auto"}))
    assert raw.headers[IGNORED] == CODEX_IGNORED
    sent = upstream.requests[0]
    assert sent["reasoning_effort"] == "high"
    assert sent["prompt_cache_key"] == "0199-session"
    assert [m["role"] for m in sent["messages"]] == ["system", "developer", "user"]
    assert [t["function"]["name"] for t in sent["tools"]] == ["exec_command", "mcp__files__read"]
    assert sent["tool_choice"] == "auto" and sent["parallel_tool_calls"] is True
    assert not {"include", "reasoning", "client_metadata", "store"} & set(sent)
    # The call of a flattened namespace tool goes back as the client named it.
    (call,) = [item for item in raw.parse().output if item.type == "function_call"]
    assert (call.name, call.namespace) == ("read", "mcp__files")


def test_codex_next_turn_sends_back_reasoning_and_namespaced_calls(fidelity_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="It is a README."))
    request = codex_request("gpt-test")
    request["input"] = [
        *request["input"],
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA-opaque"},
        {"type": "function_call", "call_id": "call_1", "namespace": "mcp__files", "name": "read", "arguments": '{"path": "README.md"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "# plugway"},
    ]
    raw = openai_client(fidelity_gateway).responses.with_raw_response.create(**request)
    assert raw.parse().output_text == "It is a README."
    assert raw.headers[IGNORED] == "client_metadata, reasoning.summary, include[0], tools[2], input[2]"
    assistant = upstream.requests[0]["messages"][-2]
    assert assistant["tool_calls"][0]["function"]["name"] == "mcp__files__read"


def test_refuse_names_every_field_in_one_error(fidelity_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    for org, model in (("strict", "gpt-test"), ("acme", "strict-model")):
        with pytest.raises(openai.BadRequestError) as info:
            openai_client(fidelity_gateway, org).responses.create(**codex_request(model))
        body = info.value.body
        assert body["code"] == "unsupported_parameter"  # type: ignore[index]
        assert body["param"] == CODEX_IGNORED  # type: ignore[index]
        assert CODEX_IGNORED in body["message"]  # type: ignore[index]
    assert upstream.requests == []


def test_legacy_fields_stay_refused_and_unknown_chat_fields_pass_through(fidelity_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    client = openai_client(fidelity_gateway)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}], extra_body={"functions": [{"name": "f"}]})
    assert info.value.body["code"] == "unsupported_parameter"  # type: ignore[index]
    upstream.enqueue(Reply(text="ok"))
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-test",
        messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "hi"}, {"role": "system", "content": "Mid-conversation."}],
        extra_body={"prompt_cache_key": "k", "some_future_field": {"x": 1}},
    )
    assert IGNORED not in raw.headers
    sent = upstream.requests[0]
    assert sent["some_future_field"] == {"x": 1} and sent["prompt_cache_key"] == "k"
    assert [m["role"] for m in sent["messages"]] == ["developer", "user", "system"]


# -- Claude Code's request on /v1/messages?beta=true --------------------------------------------

CLAUDE_CODE_TOOLS = [
    {"name": f"Tool{i}", "description": f"Client tool {i}.", "input_schema": {"type": "object", "properties": {"arg": {"type": "string"}}}}
    for i in range(24)
]
# In the order of the body the SDK sends.
CLAUDE_CODE_IGNORED = "context_management, output_config.effort, thinking"


def claude_code_request(model: str) -> JSON:
    return {
        "model": model,
        "max_tokens": 32000,
        "system": [{"type": "text", "text": "You are Claude Code."}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "List the files."}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Sure."}]},
            {"role": "system", "content": "The user switched to plan mode."},
            {"role": "user", "content": "Go on."},
        ],
        "tools": CLAUDE_CODE_TOOLS,
        "metadata": {"user_id": "user_abc_session_1"},
        "betas": ["claude-code-20250219", "interleaved-thinking-2025-05-14", "context-management-2025-06-27", "effort-2025-11-24"],
        # Claude Code's path, POST /v1/messages?beta=true (this SDK version leaves the qualifier out).
        "extra_query": {"beta": "true"},
        "extra_body": {
            "thinking": {"type": "adaptive"},
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            "output_config": {"effort": "high"},
        },
    }


@pytest.mark.parametrize("stream", [False, True])
def test_claude_code_first_request_is_answered_on_the_demo_model_naming_what_was_ignored(fidelity_gateway: GatewayServer, stream: bool) -> None:
    client = anthropic_client(fidelity_gateway)
    if stream:
        with client.beta.messages.with_streaming_response.create(**claude_code_request("claude-opus-4-8"), stream=True) as raw:
            assert raw.status_code == 200 and raw.http_request.url.params["beta"] == "true"
            assert "claude-code-20250219" in raw.http_request.headers["anthropic-beta"]
            assert raw.headers[IGNORED] == CLAUDE_CODE_IGNORED
            events = list(raw.parse())
        assert events[0].message.model == "claude-opus-4-8"  # type: ignore[union-attr]
        assert events[-1].type == "message_stop"
    else:
        raw_answer = client.beta.messages.with_raw_response.create(**claude_code_request("claude-opus-4-8"))
        assert raw_answer.http_request.url.params["beta"] == "true"
        assert raw_answer.headers[IGNORED] == CLAUDE_CODE_IGNORED
        assert raw_answer.parse().model == "claude-opus-4-8"


def test_claude_code_request_reaches_a_chat_upstream_with_the_system_message_in_place(fidelity_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="Done."))
    raw = anthropic_client(fidelity_gateway).beta.messages.with_raw_response.create(**claude_code_request("gpt-test"))
    assert raw.headers[IGNORED] == CLAUDE_CODE_IGNORED
    assert raw.parse().content[0].text == "Done."  # type: ignore[union-attr]
    sent = upstream.requests[0]
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "system", "user"]
    assert sent["messages"][3]["content"] == "The user switched to plan mode."
    assert len(sent["tools"]) == 24 and sent["user"] == "user_abc_session_1"
    assert not {"thinking", "context_management", "output_config"} & set(sent)


def test_messages_refuse_names_every_field_and_validation_names_the_index(fidelity_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        anthropic_client(fidelity_gateway, "strict").beta.messages.create(**claude_code_request("gpt-test"))
    assert CLAUDE_CODE_IGNORED in refused.value.message
    with pytest.raises(anthropic.BadRequestError) as invalid:
        anthropic_client(fidelity_gateway).messages.create(
            model="gpt-test", max_tokens=10,
            messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}, {"role": "robot", "content": "d"}],  # type: ignore[list-item, typeddict-item]
        )
    assert "messages[3].role" in invalid.value.message
    assert upstream.requests == []


# -- aliases, models lists, probes ---------------------------------------------------------------

def test_aliases_answer_with_the_name_sent_and_usage_records_both(fidelity_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="from gpt-test"), Reply(text="org alias"))
    answer = openai_client(fidelity_gateway).chat.completions.create(model="gpt-5.1-codex", messages=[{"role": "user", "content": "hi"}])
    assert answer.model == "gpt-5.1-codex" and answer.choices[0].message.content == "from gpt-test"
    assert upstream.requests[0]["model"] == "gpt-4o-mini"
    # The organisation's aliases win over the global ones: claude-opus-* is gpt-test there, demo elsewhere.
    message = anthropic_client(fidelity_gateway, "own-aliases").messages.create(model="claude-opus-4-8", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert message.model == "claude-opus-4-8" and message.content[0].text == "org alias"  # type: ignore[union-attr]
    with pytest.raises(openai.NotFoundError):
        openai_client(fidelity_gateway).chat.completions.create(model="o3-not-an-alias", messages=[{"role": "user", "content": "hi"}])
    fidelity_gateway.flush_usage()
    with Session(fidelity_gateway.gateway.engine) as session:
        rows = {(r.model, r.requested_model) for r in session.exec(select(UsageRecord).where(UsageRecord.organisation_id.in_(["acme", "own-aliases"])))}  # type: ignore[attr-defined]
    assert {("gpt-test", "gpt-5.1-codex"), ("gpt-test", "claude-opus-4-8")} <= rows


def test_models_list_shows_plain_aliases_and_answers_anthropic_callers_in_their_shape(fidelity_gateway: GatewayServer) -> None:
    listed = [m.id for m in openai_client(fidelity_gateway).models.list()]
    assert {"gpt-test", "demo", "claude-haiku-4-5"} <= set(listed)
    assert not [name for name in listed if "*" in name]
    page = anthropic_client(fidelity_gateway).models.list()
    assert [m.id for m in page.data] == listed
    assert all(m.type == "model" and m.display_name == m.id for m in page.data)
    raw = httpx.get(f"{fidelity_gateway.url}/v1/models", headers={"authorization": f"Bearer {fidelity_gateway.mint()}", "anthropic-version": "2023-06-01"})
    body = orjson.loads(raw.content)
    assert (body["has_more"], body["first_id"], body["last_id"]) == (False, listed[0], listed[-1])
    assert anthropic_client(fidelity_gateway).models.retrieve("claude-opus-4-8").id == "claude-opus-4-8"


def test_root_answers_head_and_get(fidelity_gateway: GatewayServer) -> None:
    assert httpx.head(f"{fidelity_gateway.url}/").status_code == 200
    root = httpx.get(f"{fidelity_gateway.url}/")
    assert root.status_code == 200 and root.json()["status"] == "ok"


def test_design_settings_not_built_yet_are_refused_in_one_line(tmp_path: Path) -> None:
    from runtime.config import ConfigError, settings_from_dict

    # api: responses exists for the openai kind only (runtime.providers.registry), and says so for the others.
    assert settings_from_dict({"providers": [{"id": "p", "kind": "openai", "base_url": "http://127.0.0.1:1", "api": "responses"}]}).providers[0].api == "responses"
    with pytest.raises(ConfigError, match=r"provider kind 'anthropic' cannot be called with api 'responses'"):
        settings_from_dict({"providers": [{"id": "p", "kind": "anthropic", "base_url": "http://127.0.0.1:1", "api": "responses"}]})
    with pytest.raises(ConfigError, match=r"models\[0\]\.api: provider kind 'demo' cannot be called with api 'responses'"):
        settings_from_dict({"providers": [{"id": "p", "kind": "demo"}], "models": [{"id": "m", "provider": "p", "api": "responses"}]})
    with pytest.raises(ConfigError, match=r"plugins\[0\]\.mcp\.auth: auth type 'oauth' is not available yet"):
        settings_from_dict({"organisations": [{"id": "a", "plugins": [{"id": "kb", "mcp": {"url": "http://127.0.0.1:1", "auth": {"type": "oauth", "per_user": True}}}]}]})
    with pytest.raises(ConfigError, match=r"model_aliases\.gpt-5\*: unknown model 'ghost'"):
        settings_from_dict({"model_aliases": {"gpt-5*": "ghost"}})
    assert settings_from_dict({"providers": [{"id": "p", "kind": "openai", "base_url": "http://127.0.0.1:1", "api": "chat"}]}).providers[0].api == "chat"
