"""OpenAI's Codex CLI, unmodified, through plugway: ``codex exec`` against a real gateway.

Codex is configured only through a temporary ``CODEX_HOME/config.toml`` (a custom model
provider pointing at plugway with ``wire_api = "responses"``, and plugway's ``/mcp`` as
its MCP server with the same key) and runs offline: no login, analytics, feedback or
update check. Its model name (``gpt-5.5``) reaches plugway's models through a model
alias: (a) the offline ``demo`` model, reached by translation to chat completions,
(b) a Responses-native upstream (the responses_fake), which checks that every reasoning item sent
back is one it issued, unchanged, (c) a chat-completions OpenAI upstream and (d) an
Anthropic upstream (their fakes), both reached by translation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import anthropic_provider
from tests.fakes.anthropic_server import FakeAnthropic, fake_anthropic_server, last_tool_result
from tests.fakes.anthropic_server import Reply as AnthropicReply
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.openai_server import Reply as ChatReply
from tests.fakes.responses_server import Call, FakeResponses, Turn, input_items, reasoning_items
from tests.support import Gateways, GatewayServer, make_settings

__all__ = ["fake_anthropic_server"]  # a fixture used by name

JSON = dict[str, Any]
ROOT = Path(__file__).resolve().parents[2]
CODEX = ROOT / ".agents" / "node_modules" / ".bin" / "codex"
# A name Codex 0.171 has no bundled metadata for: it then offers its tools directly (function
# tools, a namespace per MCP server, web_search) and asks for reasoning summaries. (For names it
# knows, such as its default gpt-6.2-sol or gpt-5.5, it defers MCP tools behind a client-side
# tool_search, or moves every tool into an additional_tools input item; see the README.)
CODEX_MODEL = "gpt-5"
SECRET = "plugway-7f3a"
SHELL_TASK = 'Use exec command "cat secret.txt" and tell me what the file says.'
MCP_TASK = "What is 17 * 23? Use the calculator evaluate tool."
# Codex's own default model (None: no `model` in config.toml; gpt-6.2-sol in 0.171) offers one tool,
# a custom JavaScript `exec` in an additional_tools input item, through which every other tool is
# called: the demo runs the script the prompt quotes.
SHELL_SCRIPT = "text(JSON.stringify(await tools.exec_command({cmd: `cat secret.txt`})))"
MCP_SCRIPT = "text(JSON.stringify(await tools.mcp__plugway__calculator__evaluate({expression: `17*23`})))"
TASKS = {
    ("shell", CODEX_MODEL): SHELL_TASK,
    ("mcp", CODEX_MODEL): MCP_TASK,
    ("shell", None): f'Use functions exec with "{SHELL_SCRIPT}"',
    ("mcp", None): f'Use functions exec with "{MCP_SCRIPT}"',
}

pytestmark = pytest.mark.skipif(not CODEX.exists(), reason="Codex CLI not installed: run `make agents`")


def codex_config(base_url: str, mcp_url: str, model: str | None = CODEX_MODEL) -> str:
    """The whole Codex configuration plugway needs (the README's, with the test's addresses)."""
    chosen = f'model = "{model}"\n' if model else ""
    return f"""\
{chosen}model_provider = "plugway"
check_for_update_on_startup = false

[model_providers.plugway]
name = "plugway"
base_url = "{base_url}"
wire_api = "responses"
env_key = "PLUGWAY_KEY"

[mcp_servers.plugway]
url = "{mcp_url}"
bearer_token_env_var = "PLUGWAY_KEY"

[analytics]
enabled = false

[feedback]
enabled = false
"""


@dataclass
class CodexRun:
    returncode: int
    answer: str
    events: list[dict[str, Any]]
    stderr: str

    @property
    def failures(self) -> list[dict[str, Any]]:
        """Error events: a refused request (4xx) or a failed turn would show here."""
        return [e for e in self.events if e.get("type") in ("error", "turn.failed")]

    def items(self, kind: str) -> list[dict[str, Any]]:
        return [e["item"] for e in self.events if e.get("type") == "item.completed" and (e.get("item") or {}).get("type") == kind]


def run_codex(tmp_path: Path, gateway: GatewayServer, key: str, prompt: str, *, model: str | None = CODEX_MODEL) -> CodexRun:
    home, work = tmp_path / "codex-home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (work / "secret.txt").write_text(f"The secret is {SECRET}.\n")
    (home / "config.toml").write_text(codex_config(gateway.base_url, f"{gateway.url}/mcp", model))
    answer_file = tmp_path / "answer.txt"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "CODEX_HOME": str(home),
        "PLUGWAY_KEY": key,
        "NO_COLOR": "1",
        # Loopback only: anything Codex would send elsewhere goes to a closed local port and fails.
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "ALL_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    done = subprocess.run(
        [str(CODEX), "exec", "--skip-git-repo-check", "--strict-config", "--ephemeral", "--json", "-C", str(work), "-o", str(answer_file), prompt],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    answer = answer_file.read_text() if answer_file.exists() else ""
    return CodexRun(done.returncode, answer, events, done.stderr)


@pytest.fixture(scope="module")
def codex_gateway(responses_fake: FakeResponses, chat_fake: FakeOpenAI, fake_anthropic_server: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("codex-gateway"),
        responses_fake.base_url,
        providers=[
            {"id": "demo", "kind": "demo"},
            {"id": "native", "kind": "openai", "api": "responses", "base_url": responses_fake.base_url, "api_key": responses_fake.api_key, "max_retries": 0},
            {"id": "chat-upstream", "kind": "openai", "base_url": chat_fake.base_url, "api_key": chat_fake.api_key, "timeout_s": 30, "max_retries": 0},
            anthropic_provider("anthropic", fake_anthropic_server.base_url, timeout_s=30),
        ],
        models=[
            {"id": "demo", "provider": "demo"},
            {"id": "reasoner", "provider": "native", "upstream_model": "gpt-5.5"},
            {"id": "chat", "provider": "chat-upstream", "upstream_model": "gpt-4.1"},
            {"id": "anthropic", "provider": "anthropic", "upstream_model": "claude-opus-4-8"},
        ],
        organisations=[
            # Codex's model names, whatever they are, reach the one model each organisation chose.
            {"id": "on-demo", "model_aliases": {"gpt-*": "demo"}, "plugins": [{"id": "calculator"}]},
            {"id": "on-reasoner", "model_aliases": {"gpt-*": "reasoner"}, "plugins": [{"id": "calculator"}]},
            {"id": "on-chat", "model_aliases": {"gpt-*": "chat"}, "plugins": [{"id": "calculator"}]},
            {"id": "on-anthropic", "model_aliases": {"gpt-*": "anthropic"}, "plugins": [{"id": "calculator"}]},
        ],
    )
    with Gateways() as started:
        yield started.start(settings)


def _last_output(body: dict[str, Any]) -> str | None:
    items = input_items(body)
    last = items[-1] if items else {}
    return str(last.get("output")) if last.get("type") in ("function_call_output", "custom_tool_call_output") else None


def _code_mode(body: dict[str, Any]) -> bool:
    """Codex's default model: its tools come in an additional_tools item, a custom JavaScript `exec` among them."""
    return any(item.get("type") == "additional_tools" for item in input_items(body))


def _tool_named(body: dict[str, Any], suffix: str) -> Call | None:
    """The function tool (or namespace member) whose name ends with ``suffix``, as the fake would call it:
    among the request's tools, or those a client-side tool search returned in its input."""
    found = [tool for item in input_items(body) if item.get("type") == "tool_search_output" for tool in item.get("tools") or ()]
    for tool in [*(body.get("tools") or ()), *found]:
        if tool.get("type") == "function" and str(tool.get("name")).endswith(suffix):
            return Call(tool["name"])
        if tool.get("type") == "namespace":
            for member in tool.get("tools") or ():
                if str(member.get("name")).endswith(suffix):
                    return Call(member["name"], namespace=tool["name"])
    return None


def reasoner(body: dict[str, Any]) -> Turn:
    """The fake's model: call the shell or the calculator once, then answer from the result."""
    result = _last_output(body)
    if result is not None:
        return Turn(text=f"The tool said: {result}", reasoning="Read the tool's result.")
    asked = json.dumps(input_items(body))
    if _code_mode(body):
        script = SHELL_SCRIPT if "secret.txt" in asked else MCP_SCRIPT
        run = {"type": "custom_tool_call", "id": "ctc_fake", "call_id": "call_exec_1", "namespace": "functions", "name": "exec", "input": script, "status": "completed"}
        return Turn(items=[run], reasoning="Write a script.")
    if "secret.txt" in asked:
        call = _tool_named(body, "exec_command")
        assert call is not None, "Codex offered no exec_command tool"
        call.arguments = {"cmd": "cat secret.txt"}
    else:
        call = _tool_named(body, "evaluate")
        if call is None and any(tool.get("type") == "tool_search" for tool in body.get("tools") or ()):
            # Codex defers MCP tools behind its own tool search for models it knows: search first.
            search = {"type": "tool_search_call", "id": f"ts_{len(fake_calls(body))}", "call_id": "call_search_1", "execution": "client", "arguments": {"query": "calculator evaluate"}, "status": "completed"}
            return Turn(items=[search], reasoning="Find the calculator tool.")
        assert call is not None, "Codex offered no MCP calculator tool"
        call.arguments = {"expression": "17*23"}
    return Turn(calls=[call], reasoning="I should use a tool for this.")


def fake_calls(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for item in input_items(body) if str(item.get("type")).endswith("_call")]


def _suffixed(names: list[str], suffix: str) -> str:
    found = [name for name in names if name.endswith(suffix)]
    assert found, f"Codex offered no tool ending in {suffix}: {names}"
    return found[0]


def _wanted_call(asked: str, names: list[str]) -> tuple[str, JSON]:
    """The one tool call the task needs, among the tools as the translated request names them."""
    if "functions__exec" in names:
        # Codex's default model: its custom JavaScript `exec`, a chat function taking one string, `input`.
        return "functions__exec", {"input": SHELL_SCRIPT if "secret.txt" in asked else MCP_SCRIPT}
    if "secret.txt" in asked:
        return _suffixed(names, "exec_command"), {"cmd": "cat secret.txt"}
    return _suffixed(names, "evaluate"), {"expression": "17*23"}


def chat_model(body: JSON) -> ChatReply:
    """The chat-completions fake's model: the same task, over the chat wire format."""
    last = body["messages"][-1]
    if last["role"] == "tool":
        return ChatReply(text=f"The tool said: {last['content']}")
    names = [str(tool["function"]["name"]) for tool in body.get("tools") or ()]
    return ChatReply(tool_calls=[_wanted_call(json.dumps(body["messages"]), names)])


def anthropic_model(body: JSON) -> AnthropicReply:
    """The Anthropic fake's model: thinks (signed) when asked to, calls the tool, answers from its result."""
    thinks = isinstance(body.get("thinking"), dict) and body["thinking"].get("type") in ("enabled", "adaptive")
    result = last_tool_result(body)
    if result is not None:
        return AnthropicReply(thinking="Read the tool's result." if thinks else None, text=f"The tool said: {result}")
    names = [str(tool.get("name")) for tool in body.get("tools") or ()]
    return AnthropicReply(thinking="I should use a tool for this." if thinks else None, tool_use=[_wanted_call(json.dumps(body["messages"]), names)])


def _results_reached_the_model(model: str, codex_model: str | None, responses_fake: FakeResponses, chat_fake: FakeOpenAI, anthropic: FakeAnthropic, expected: str) -> None:
    """The tool ran and its result went back to the upstream in the next round."""
    if model == "chat":
        results = [str(m.get("content")) for body in chat_fake.requests for m in body["messages"] if m["role"] == "tool"]
    elif model == "anthropic":
        results = [r for recorded in anthropic.requests if (r := last_tool_result(recorded.body)) is not None]
        assert [r.status for r in anthropic.requests] == [200] * len(anthropic.requests)
        # Codex asks its default model for reasoning: Anthropic thinking, whose signed blocks reach Codex
        # inside reasoning items' encrypted_content and come back with the tool round, first in its turn
        # (the fake refuses the round otherwise). The other model name is one Codex asks no reasoning of.
        assert any(r.body.get("thinking") for r in anthropic.requests) == (codex_model is None)
        for recorded in anthropic.requests:
            if recorded.body.get("thinking") and last_tool_result(recorded.body) is not None:
                turn = [m["content"] for m in recorded.body["messages"] if m["role"] == "assistant"][-1]
                assert anthropic.signatures[turn[0]["signature"]] == "I should use a tool for this.", turn
    else:
        results = [str(o) for body in responses_fake.requests if (o := _last_output(body)) is not None]
    assert any(expected in result for result in results), results


def _script_every_fake(responses_fake: FakeResponses, chat_fake: FakeOpenAI, anthropic: FakeAnthropic) -> None:
    responses_fake.reset()
    responses_fake.responder = reasoner
    chat_fake.reset()
    chat_fake.responder = chat_model
    anthropic.reset()
    anthropic.responder = anthropic_model


# Every kind of model plugway serves (offline demo, Responses-native, chat completions, Anthropic),
# each under a model name Codex offers its tools directly for and under its own default (code mode).
KINDS = [
    *(pytest.param(model, codex_model, id=f"{model}-{codex_model or 'codex-default'}") for model in ("demo", "reasoner", "chat", "anthropic") for codex_model in (CODEX_MODEL, None)),
]

@pytest.mark.parametrize(("model", "codex_model"), KINDS)
def test_codex_runs_a_shell_command_through_plugway(
    model: str, codex_model: str | None, codex_gateway: GatewayServer, responses_fake: FakeResponses, chat_fake: FakeOpenAI, fake_anthropic_server: FakeAnthropic, tmp_path: Path
) -> None:
    _script_every_fake(responses_fake, chat_fake, fake_anthropic_server)
    run = run_codex(tmp_path, codex_gateway, codex_gateway.mint(f"on-{model}"), TASKS[("shell", codex_model)], model=codex_model)
    assert run.returncode == 0 and not run.failures, (run.failures, run.stderr[-3000:])
    commands = run.items("command_execution")
    assert any("cat secret.txt" in c.get("command", "") and c.get("exit_code") == 0 for c in commands), run.events
    assert SECRET in run.answer
    if model != "demo":
        _results_reached_the_model(model, codex_model, responses_fake, chat_fake, fake_anthropic_server, SECRET)
    if model == "reasoner":
        _assert_reasoning_reached_every_round(responses_fake, hosted_search=codex_model is not None)


@pytest.mark.parametrize(("model", "codex_model"), KINDS)
def test_codex_uses_a_plugway_plugin_through_mcp(
    model: str, codex_model: str | None, codex_gateway: GatewayServer, responses_fake: FakeResponses, chat_fake: FakeOpenAI, fake_anthropic_server: FakeAnthropic, tmp_path: Path
) -> None:
    _script_every_fake(responses_fake, chat_fake, fake_anthropic_server)
    run = run_codex(tmp_path, codex_gateway, codex_gateway.mint(f"on-{model}"), TASKS[("mcp", codex_model)], model=codex_model)
    assert run.returncode == 0 and not run.failures, (run.failures, run.stderr[-3000:])
    calls = run.items("mcp_tool_call")
    assert any(c.get("server") == "plugway" and c.get("status") == "completed" for c in calls), run.events
    assert "391" in run.answer
    if model != "demo":
        _results_reached_the_model(model, codex_model, responses_fake, chat_fake, fake_anthropic_server, "391")
    if model == "reasoner":
        _assert_reasoning_reached_every_round(responses_fake, hosted_search=codex_model is not None)


def test_codex_finds_a_plugway_plugin_through_its_own_tool_search(codex_gateway: GatewayServer, responses_fake: FakeResponses, tmp_path: Path) -> None:
    """For a model it knows (gpt-5.5), Codex hides MCP tools behind a client-side ``tool_search``:
    its call, Codex's output and the namespaced call that follows all pass through as they are."""
    responses_fake.reset()
    responses_fake.responder = reasoner
    run = run_codex(tmp_path, codex_gateway, codex_gateway.mint("on-reasoner"), MCP_TASK, model="gpt-5.5")
    assert run.returncode == 0 and not run.failures, (run.failures, run.stderr[-3000:])
    assert any(c.get("server") == "plugway" and c.get("status") == "completed" for c in run.items("mcp_tool_call")), run.events
    assert "391" in run.answer
    searched = [item for body in responses_fake.requests for item in input_items(body) if item.get("type") == "tool_search_output"]
    assert searched, "Codex never answered its tool search"
    called = [item for item in input_items(responses_fake.requests[-1]) if item.get("type") == "function_call"]
    assert called and all(item.get("namespace") for item in called)  # the namespace went back as Codex named it
    _assert_reasoning_reached_every_round(responses_fake, hosted_search=False)


def _assert_reasoning_reached_every_round(responses_fake: FakeResponses, *, hosted_search: bool = True) -> None:
    """Codex is stateless (store: false): each request carries every earlier reasoning item, unchanged."""
    turns = [i for i, body in enumerate(responses_fake.requests) if body.get("input")]
    assert len(turns) >= 2, responses_fake.requests
    for later in turns[1:]:
        earlier = [item for i in turns if i < later for item in responses_fake.issued_in(i)]
        # Codex re-serialises each item (adding "content": null); everything with a value is the fake's own.
        assert [_valued(item) for item in reasoning_items(responses_fake.requests[later])] == earlier
    first = responses_fake.requests[turns[0]]
    # Codex's own fields reached the upstream as Codex sent them.
    assert first["store"] is False and first["include"] == ["reasoning.encrypted_content"]
    assert "client_metadata" in first and "prompt_cache_key" in first
    if hosted_search:
        assert any(tool.get("type") == "web_search" for tool in first["tools"])


def _valued(item: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in item.items() if value is not None}


def test_codex_is_installed_at_the_documented_version() -> None:
    version = subprocess.run([str(CODEX), "--version"], capture_output=True, text=True, timeout=60, env={"PATH": os.environ.get("PATH", ""), "HOME": "/tmp"})
    assert "0.171.0" in version.stdout, version.stdout
    assert shutil.which("node") is not None
