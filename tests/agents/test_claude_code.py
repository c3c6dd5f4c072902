"""Claude Code, unmodified, through plugway: ``claude -p … --output-format json`` with only
``ANTHROPIC_BASE_URL`` and ``ANTHROPIC_AUTH_TOKEN`` pointing it at the gateway (offline: telemetry,
updates and nonessential traffic off, ``HOME`` in a temporary directory).

Every kind of model plugway serves, behind Claude Code's own default model names (``claude-*``
aliases per organisation): the offline ``demo`` model; the fake Anthropic upstream, which signs the
thinking it sends and refuses a tool round whose thinking came back altered or missing; and, by
translation, a chat-completions OpenAI upstream and a Responses-native one (their fakes). Each
runs a task that needs Claude Code's own Bash tool, and one that needs a plugway plugin tool
through ``/mcp`` configured as Claude Code's MCP server (``--mcp-config``, http transport with
the gateway key as Bearer).

Needs ``make agents`` (Claude Code in ``.agents/``); skipped without it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from runtime.requestlog.store import RequestFilters, read_page
from tests.e2e.conftest import anthropic_provider
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    Reply,
    fake_anthropic,
    fake_anthropic_server,
    last_tool_result,
)
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.openai_server import Reply as ChatReply
from tests.fakes.responses_server import Call, FakeResponses, Turn, input_items, reasoning_items
from tests.support import GatewayServer, make_settings, wait_until

__all__ = ["fake_anthropic", "fake_anthropic_server"]  # fixtures used by name

JSON = dict[str, Any]
CLAUDE = Path(__file__).resolve().parents[2] / ".agents" / "node_modules" / ".bin" / "claude"
PLUGINS = [{"id": "clock"}, {"id": "calculator"}]
CALCULATOR = "mcp__plugway__calculator__evaluate"
SHELL_TASK = "Run `echo plugway-ok > proof.txt` in the shell"
COMMAND = "echo plugway-ok > proof.txt"

pytestmark = pytest.mark.skipif(not CLAUDE.exists(), reason="Claude Code is not installed: run `make agents`")


@pytest.fixture(scope="module")
def gateway(fake_anthropic_server: FakeAnthropic, chat_fake: FakeOpenAI, responses_fake: FakeResponses, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("claude-code-gateway"),
        fake_anthropic_server.base_url,
        providers=[
            anthropic_provider("anthropic", fake_anthropic_server.base_url, timeout_s=30),
            {"id": "demo", "kind": "demo"},
            {"id": "chat-upstream", "kind": "openai", "base_url": chat_fake.base_url, "api_key": chat_fake.api_key, "timeout_s": 30, "max_retries": 0},
            {"id": "native", "kind": "openai", "api": "responses", "base_url": responses_fake.base_url, "api_key": responses_fake.api_key, "timeout_s": 30, "max_retries": 0},
        ],
        models=[
            {"id": "claude-fake", "provider": "anthropic", "upstream_model": "claude-opus-4-8"},
            {"id": "demo", "provider": "demo"},
            {"id": "chat", "provider": "chat-upstream", "upstream_model": "gpt-4.1"},
            {"id": "reasoner", "provider": "native", "upstream_model": "gpt-5.5"},
        ],
        organisations=[
            # Whatever Claude model Claude Code asks for (its main and its small fast one) is this organisation's model.
            {"id": "on-demo", "plugins": PLUGINS, "model_aliases": {"claude-*": "demo"}},
            {"id": "on-anthropic", "plugins": PLUGINS, "model_aliases": {"claude-*": "claude-fake"}},
            {"id": "on-chat", "plugins": PLUGINS, "model_aliases": {"claude-*": "chat"}},
            {"id": "on-reasoner", "plugins": PLUGINS, "model_aliases": {"claude-*": "reasoner"}},
        ],
    )
    server = GatewayServer(settings).start()
    yield server
    server.stop()


def run_claude(gateway: GatewayServer, organisation: str, prompt: str, workdir: Path, *, mcp: bool = False) -> JSON:
    key = gateway.mint(organisation)
    home = workdir / "home"
    home.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": gateway.url,
        "ANTHROPIC_AUTH_TOKEN": key,
        # Offline: no telemetry, error reports, update checks or other nonessential traffic.
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    command = [str(CLAUDE), "-p", prompt, "--output-format", "json", "--allowedTools", f"Bash,{CALCULATOR}"]
    if mcp:
        servers = {"mcpServers": {"plugway": {"type": "http", "url": f"{gateway.url}/mcp", "headers": {"Authorization": f"Bearer {key}"}}}}
        command += ["--mcp-config", json.dumps(servers)]
    started = datetime.now(UTC)
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-2000:] or done.stdout[-2000:]
    result: JSON = json.loads(done.stdout)
    # Nothing refused: Claude Code saw no API error, and plugway answered each of its model calls
    # with 200 (Claude Code would quietly retry some refusals without what was refused).
    assert result["is_error"] is False and result.get("api_error_status") is None, result
    filters = RequestFilters(organisation=organisation, route="/v1/messages", start=started)
    entries = wait_until(
        lambda: (found := read_page(gateway.gateway.engine, filters, before_id=None, limit=100)) and len(found) >= result["num_turns"] and found,
        "Claude Code's requests in the request log",
    )
    assert {entry["status"] for entry in entries} == {200}
    return result


def last_call(body: JSON) -> str | None:
    """The tool the last assistant turn called."""
    for message in reversed(body["messages"]):
        if message["role"] == "assistant" and isinstance(message["content"], list):
            return next((str(b["name"]) for b in message["content"] if b.get("type") == "tool_use"), None)
    return None


def tool_names(body: JSON) -> set[str]:
    return {str(tool.get("name")) for tool in body.get("tools") or ()}


def agent(body: JSON) -> Reply:
    """The fake model: thinks (signed) every round, runs the shell command or the calculator, answers."""
    result = last_tool_result(body)
    if result is not None and last_call(body) in ("Bash", CALCULATOR):
        return Reply(thinking="The tool did it; answer.", text=f"Done: {result.strip()[:80]}")
    asked = json.dumps(body["messages"])
    if "17 * 23" in asked:
        if CALCULATOR in tool_names(body):
            return Reply(thinking="The calculator is loaded; use it.", tool_use=[(CALCULATOR, {"expression": "17 * 23"})])
        if "ToolSearch" in tool_names(body):
            return Reply(thinking="Load the calculator first.", tool_use=[("ToolSearch", {"query": f"select:{CALCULATOR}"})])
    if COMMAND in asked and "Bash" in tool_names(body):
        return Reply(thinking="Run the command in the shell.", redacted_thinking=True, tool_use=[("Bash", {"command": COMMAND, "description": "Write proof"})])
    return Reply(thinking="Nothing to do.", text="Nothing to do.")


def assert_thinking_went_back_every_round(fake: FakeAnthropic) -> None:
    conversation = [r for r in fake.requests if r.body.get("tools")]
    assert conversation, "Claude Code reached the upstream"
    # Every request was answered: none was refused for a missing, altered or misplaced thinking block.
    assert [r.status for r in fake.requests] == [200] * len(fake.requests)
    tool_rounds = 0
    for recorded in conversation:
        assert "claude-code-20250219" in recorded.headers["anthropic-beta"]
        assert recorded.query == "beta=true"
        for turn in (m["content"] for m in recorded.body["messages"] if m["role"] == "assistant" and isinstance(m["content"], list)):
            if any(block["type"] == "tool_use" for block in turn):
                tool_rounds += 1
                # Each tool round's turn opens with the thinking the fake signed for it, unchanged.
                assert turn[0]["type"] == "thinking" and fake.signatures[turn[0]["signature"]] == turn[0]["thinking"]
    assert tool_rounds >= 1


def test_claude_code_runs_its_own_shell_tool_on_the_demo_model(gateway: GatewayServer, tmp_path: Path) -> None:
    result = run_claude(gateway, "on-demo", SHELL_TASK, tmp_path)
    assert (tmp_path / "proof.txt").read_text().strip() == "plugway-ok"
    assert result["num_turns"] >= 2


def test_claude_code_uses_a_plugway_plugin_through_mcp_on_the_demo_model(gateway: GatewayServer, tmp_path: Path) -> None:
    result = run_claude(gateway, "on-demo", "What is 17 * 23?", tmp_path, mcp=True)
    assert "391" in result["result"]


def test_claude_code_runs_its_shell_tool_on_anthropic_with_thinking_kept(gateway: GatewayServer, fake_anthropic: FakeAnthropic, tmp_path: Path) -> None:
    fake_anthropic.responder = agent
    run_claude(gateway, "on-anthropic", SHELL_TASK, tmp_path)
    assert (tmp_path / "proof.txt").read_text().strip() == "plugway-ok"
    assert_thinking_went_back_every_round(fake_anthropic)
    # Claude Code's own fields reached Anthropic as it sent them.
    sent = next(r.body for r in fake_anthropic.requests if r.body.get("tools"))
    assert sent["thinking"]["type"] == "adaptive" and "effort" in sent["output_config"]
    assert "context_management" in sent and "user_id" in sent["metadata"]


def test_claude_code_uses_a_plugway_plugin_through_mcp_on_anthropic_with_thinking_kept(gateway: GatewayServer, fake_anthropic: FakeAnthropic, tmp_path: Path) -> None:
    fake_anthropic.responder = agent
    result = run_claude(gateway, "on-anthropic", "What is 17 * 23?", tmp_path, mcp=True)
    assert "391" in result["result"]
    assert_thinking_went_back_every_round(fake_anthropic)
    # The calculator ran in plugway, called by Claude Code through /mcp.
    assert any("391" in (last_tool_result(r.body) or "") for r in fake_anthropic.requests)


# -- the translated kinds: a chat-completions upstream and a Responses-native one ----------------


def _wanted(asked: str, names: set[str]) -> tuple[str, JSON] | None:
    """The call the task needs next, among the tools as the translated request names them."""
    if "17 * 23" in asked:
        if CALCULATOR in names:
            return CALCULATOR, {"expression": "17 * 23"}
        if "ToolSearch" in names:
            return "ToolSearch", {"query": f"select:{CALCULATOR}"}
    if COMMAND in asked and "Bash" in names:
        return "Bash", {"command": COMMAND, "description": "Write proof"}
    return None


def chat_agent(body: JSON) -> ChatReply:
    """The chat-completions fake's model: the same task as ``agent``, over the chat wire format."""
    messages = body["messages"]
    calls = [c["function"]["name"] for m in messages if m["role"] == "assistant" for c in m.get("tool_calls") or ()]
    if messages[-1]["role"] == "tool" and calls and calls[-1] in ("Bash", CALCULATOR):
        return ChatReply(text=f"Done: {str(messages[-1]['content']).strip()[:80]}")
    wanted = _wanted(json.dumps(messages), {str(t["function"]["name"]) for t in body.get("tools") or ()})
    return ChatReply(tool_calls=[wanted]) if wanted else ChatReply(text="Nothing to do.")


def responses_agent(body: JSON) -> Turn:
    """The Responses fake's model: reasons every round, calls the tool, answers from its result."""
    items = input_items(body)
    calls = [str(item.get("name")) for item in items if item.get("type") == "function_call"]
    if items and items[-1].get("type") == "function_call_output" and calls and calls[-1] in ("Bash", CALCULATOR):
        return Turn(text=f"Done: {str(items[-1].get('output')).strip()[:80]}", reasoning="The tool did it; answer.")
    wanted = _wanted(json.dumps(items), {str(t.get("name")) for t in body.get("tools") or ()})
    if wanted is None:
        return Turn(text="Nothing to do.", reasoning=None)
    return Turn(calls=[Call(wanted[0], wanted[1])], reasoning="Use the tool.")


def tool_results(kind: str, chat_fake: FakeOpenAI, responses_fake: FakeResponses) -> list[str]:
    """Every tool result the upstream of ``kind`` was sent."""
    if kind == "chat":
        return [str(m.get("content")) for body in chat_fake.requests for m in body["messages"] if m["role"] == "tool"]
    return [str(item.get("output")) for body in responses_fake.requests for item in input_items(body) if item.get("type") == "function_call_output"]


def assert_reasoning_went_back_every_round(fake: FakeResponses) -> None:
    """Claude Code asks for thinking: the model's reasoning items reach it inside thinking blocks
    and come back in its history, so every round after a tool call sends each earlier call's
    reasoning item, byte for byte (the fake also refuses an item it did not issue)."""
    rounds = [body for body in fake.requests if any(item.get("type") == "function_call_output" for item in input_items(body))]
    assert rounds, "no tool round reached the upstream"
    for body in rounds:
        calls = [item for item in input_items(body) if item.get("type") == "function_call"]
        sent = reasoning_items(body)
        assert len(sent) >= len(calls) and all(item == fake.issued[item["id"]] for item in sent), (calls, sent)


@pytest.fixture
def translated(chat_fake: FakeOpenAI, responses_fake: FakeResponses) -> Iterator[None]:
    chat_fake.reset()
    chat_fake.responder = chat_agent
    responses_fake.reset()
    responses_fake.responder = responses_agent
    yield
    chat_fake.reset()
    responses_fake.reset()


TRANSLATED = pytest.mark.parametrize("kind", ["chat", "reasoner"])


@TRANSLATED
@pytest.mark.usefixtures("translated")
def test_claude_code_runs_its_shell_tool_on_a_translated_upstream(kind: str, gateway: GatewayServer, chat_fake: FakeOpenAI, responses_fake: FakeResponses, tmp_path: Path) -> None:
    run_claude(gateway, f"on-{kind}", SHELL_TASK, tmp_path)
    assert (tmp_path / "proof.txt").read_text().strip() == "plugway-ok"
    # Bash ran and its result went back to the upstream in the next round (the fake answers only then).
    assert tool_results(kind, chat_fake, responses_fake), "no tool result reached the upstream"
    if kind == "reasoner":
        assert_reasoning_went_back_every_round(responses_fake)


@TRANSLATED
@pytest.mark.usefixtures("translated")
def test_claude_code_uses_a_plugway_plugin_through_mcp_on_a_translated_upstream(kind: str, gateway: GatewayServer, chat_fake: FakeOpenAI, responses_fake: FakeResponses, tmp_path: Path) -> None:
    result = run_claude(gateway, f"on-{kind}", "What is 17 * 23?", tmp_path, mcp=True)
    assert "391" in result["result"]
    assert any("391" in r for r in tool_results(kind, chat_fake, responses_fake)), tool_results(kind, chat_fake, responses_fake)
    if kind == "reasoner":
        assert_reasoning_went_back_every_round(responses_fake)

