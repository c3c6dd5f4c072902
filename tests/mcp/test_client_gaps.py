"""The MCP client's sampling limits and a plugin's configured ``allowed_tools``, through the gateway.

openai SDK -> plugway under uvicorn -> fake upstream, with the tools on the test MCP
server (stdio). For sampling, the test server gets one more tool, ``ask_twice``, that
asks the client's model two questions in one call (the pre-2026 ``sampling/createMessage``
request), so that what the first answer spent can stop the second: the organisation's
budget, the key's daily-token cap, and the per-call sampling token budget.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.mcp.mcp_helpers import ROOT, TEST_SERVER
from tests.support import GatewayServer, make_settings

USER = [{"role": "user", "content": "go"}]
JSON = dict[str, Any]

ASK_TWICE_SERVER = f'''
import sys
sys.path.insert(0, {str(ROOT)!r})
sys.path.insert(0, {str(TEST_SERVER.parent)!r})
import anyio
from mcp.server.mcpserver import Context
from mcp_types import SamplingMessage, TextContent
import mcp_test_server as base


@base.server.tool()
async def ask_twice(question: str, ctx: Context) -> str:
    """Asks the client's model the same question twice (pre-2026 sampling requests)."""
    answers = []
    for _ in range(2):
        message = SamplingMessage(role="user", content=TextContent(type="text", text=question))
        try:
            result = await ctx.session.create_message([message], max_tokens=500)
        except Exception as exc:  # the client refused: say why
            answers.append(f"refused: {{exc}}")
        else:
            answers.append(f"answer: {{result.content.text}}")
    return " | ".join(answers)


anyio.run(lambda: base._serve_stdio(ignore_unknown=False))
'''


def tool_contents(request: JSON) -> list[Any]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


def ask_twice_plugin(tmp_path: Path) -> JSON:
    script = tmp_path / "ask_twice_server.py"
    script.write_text(ASK_TWICE_SERVER)
    return {"id": "tk", "mcp": {"command": [sys.executable, str(script)]}}


def run_ask_twice(tmp_path: Path, upstream: FakeOpenAI, first_sampling: Reply, *, org: str = "acme", key_limits: JSON | None = None, **settings: Any) -> tuple[str, list[JSON]]:
    """One chat request whose tool call samples twice; the tool's result and the upstream's requests."""
    gateway = GatewayServer(make_settings(tmp_path, upstream.base_url, plugins=[ask_twice_plugin(tmp_path)], **settings)).start()
    try:
        client = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.mint(org, **(key_limits or {})), max_retries=0, timeout=30)
        upstream.enqueue(
            Reply(tool_calls=[("tk__ask_twice", {"question": "Capital of Portugal?"})], prompt_tokens=10, completion_tokens=2),
            first_sampling,
            Reply(text="Lisbon twice?"),  # the second sampling, when it is allowed
            Reply(text="done"),
        )
        client.chat.completions.create(model="gpt-test", messages=USER)
        requests = list(upstream.requests)
        (content,) = tool_contents(requests[-1])
        return content, requests
    finally:
        gateway.stop()


def test_a_spent_organisation_budget_stops_sampling(tmp_path: Path, upstream: FakeOpenAI) -> None:
    # gpt-test costs $1 per million input tokens: the first answer's 20,000 tokens spend the $0.01 budget.
    content, requests = run_ask_twice(
        tmp_path, upstream, Reply(text="Lisbon", prompt_tokens=20_000, completion_tokens=2),
        org="thrifty", extra_orgs=[{"id": "thrifty", "monthly_budget_usd": 0.01, "plugins": [ask_twice_plugin(tmp_path)]}],
        orchestration={"sampling": {"max_tokens_per_tool_call": 100_000}},  # only the budget can stop it
    )
    first, second = content.split(" | ")
    assert first == "answer: Lisbon"
    assert second.startswith("refused:") and "cannot be asked now" in second and "budget" in second.lower()
    assert len(requests) == 3  # the tool round, one sampling, the final round: the second question never reached the model


def test_a_keys_spent_daily_tokens_stop_sampling(tmp_path: Path, upstream: FakeOpenAI) -> None:
    content, requests = run_ask_twice(
        tmp_path, upstream, Reply(text="Lisbon", prompt_tokens=1_000, completion_tokens=2), key_limits={"daily_tokens": 500}
    )
    first, second = content.split(" | ")
    assert first == "answer: Lisbon"
    assert second.startswith("refused:") and "daily token limit" in second and "cannot be asked now" in second
    assert len(requests) == 3


def test_the_per_call_sampling_token_budget_stops_further_sampling(tmp_path: Path, upstream: FakeOpenAI) -> None:
    content, requests = run_ask_twice(
        tmp_path, upstream, Reply(text="Lisbon", prompt_tokens=60, completion_tokens=50),
        orchestration={"sampling": {"max_tokens_per_tool_call": 100}},
    )
    first, second = content.split(" | ")
    assert first == "answer: Lisbon"
    assert second.startswith("refused:") and "sampling budget of 100 tokens" in second
    assert len(requests) == 3
    assert requests[1]["max_tokens"] == 100  # the server asked for 500: the call's budget caps it


def test_with_budget_left_both_questions_are_answered_and_never_with_tools(tmp_path: Path, upstream: FakeOpenAI) -> None:
    content, requests = run_ask_twice(tmp_path, upstream, Reply(text="Lisbon", prompt_tokens=30, completion_tokens=2))
    assert content == "answer: Lisbon | answer: Lisbon twice?"
    loop_round, *sampling, final = requests
    assert "tk__ask_twice" in [tool["function"]["name"] for tool in loop_round["tools"]]
    assert len(sampling) == 2
    for request in sampling:
        assert not {"tools", "tool_choice", "parallel_tool_calls", "functions"} & set(request)
        assert all(message["role"] in ("system", "user") for message in request["messages"])
    assert final["tools"] == loop_round["tools"]


# -- allowed_tools in the configuration -------------------------------------------------------------------


@pytest.fixture
def narrowed(tmp_path: Path, upstream: FakeOpenAI) -> Any:
    plugin = {"id": "tk", "mcp": {"command": [sys.executable, str(TEST_SERVER)]}, "allowed_tools": ["echo", "add"]}
    gateway = GatewayServer(make_settings(tmp_path, upstream.base_url, plugins=[plugin])).start()
    yield gateway
    gateway.stop()


def test_only_a_plugins_allowed_tools_are_offered_and_others_cannot_be_called(narrowed: GatewayServer, upstream: FakeOpenAI) -> None:
    client = openai.OpenAI(base_url=narrowed.base_url, api_key=narrowed.mint(), max_retries=0, timeout=30)
    upstream.enqueue(
        Reply(tool_calls=[("tk__pid", {}), ("tk__echo", {"text": "hi"})]),
        Reply(text="done"),
    )
    reply = client.chat.completions.create(model="gpt-test", messages=USER)
    assert sorted(tool["function"]["name"] for tool in upstream.requests[0]["tools"]) == ["tk__add", "tk__echo"]
    excluded, allowed = tool_contents(upstream.requests[1])
    error = orjson.loads(excluded)["error"]
    assert "tk__pid" in error["message"]
    assert allowed == "hi"
    trace = reply.model_extra["plugway"]["tool_calls"]  # type: ignore[index]
    assert [(call["name"], call["ok"]) for call in trace] == [("tk__pid", False), ("tk__echo", True)]
