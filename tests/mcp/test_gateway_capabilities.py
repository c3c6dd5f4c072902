"""MCP servers as their authors intend, through the whole gateway (issue 10).

openai SDK (or httpx) -> plugway under uvicorn -> fake upstream, with the tools on a real
MCP server we wrote with the SDK, over stdio and over streamable HTTP: progress that keeps
a long call alive, sampling answered by the request's own model and billed, images,
resource links followed, tool search over a 150-tool server, client disconnects, crashes
in the backoff window, and a slow server that does not hold start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from sqlmodel import Session, select

from runtime.json_types import JSON
from runtime.orchestration.tools import TOOL_SEARCH_NAME, estimated_tokens
from runtime.storage.models import UsageRecord
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    fake_anthropic,  # noqa: F401  # fixture
    fake_anthropic_server,  # noqa: F401  # fixture
)
from tests.fakes.anthropic_server import Reply as ClaudeReply
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.mcp.mcp_helpers import (
    ROOT,
    TAG_ENV,
    TEST_SERVER,
    HttpServer,
    start_http_server,
    tagged_processes,
)
from tests.support import Gateways, GatewayServer, make_settings

USER = [{"role": "user", "content": "go"}]
REPORT_CSV = "month,refunds\nMarch,12\nApril,7 — fewer\n"  # the test server's files://report.csv


def tool_contents(request: JSON) -> list[Any]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


class Servers:
    """HTTP test servers, started once per module as they are first needed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._started: dict[tuple[str, ...], HttpServer] = {}

    def http(self, *flags: str) -> HttpServer:
        if flags not in self._started:
            directory = self.root / f"http{len(self._started)}"
            directory.mkdir()
            self._started[flags] = start_http_server(directory, *flags)
        return self._started[flags]

    def stop(self) -> None:
        for server in self._started.values():
            server.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    found = Servers(tmp_path_factory.mktemp("mcp-http"))
    yield found
    found.stop()


class Tk:
    """The test server as plugin ``tk`` of organisation acme, over one transport."""

    def __init__(self, transport: str, servers: Servers, tmp_path: Path, *flags: str, **mcp: Any) -> None:
        self.tag = uuid.uuid4().hex
        if transport == "http":
            server = servers.http(*flags)
            self.markers = server.marker_dir
            self.plugin = {"id": "tk", "mcp": {"url": server.url, "headers": {"Authorization": f"Bearer {server.token}"}, **mcp}}
        else:
            self.markers = tmp_path / "markers"
            self.markers.mkdir(exist_ok=True)
            env = {"MCP_TEST_MARKER_DIR": str(self.markers), TAG_ENV: self.tag}
            self.plugin = {"id": "tk", "mcp": {"command": [sys.executable, str(TEST_SERVER), *flags], "env": env, **mcp}}


@pytest.fixture(params=["stdio", "http"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def tk(transport: str, servers: Servers, tmp_path: Path) -> Tk:
    return Tk(transport, servers, tmp_path)


@pytest.fixture
def gateway(tk: Tk, gateways: Gateways) -> GatewayServer:
    return gateways.start(plugins=[tk.plugin])


@pytest.fixture
def client(gateway: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=gateway.mint(), max_retries=0, timeout=30)


# -- progress ----------------------------------------------------------------------------------------------


def test_progress_keeps_a_long_mcp_call_alive(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    # tool_timeout_s is 2 in tests: six 0.5 s steps take 3 s, and each report moves the deadline.
    upstream.enqueue(Reply(tool_calls=[("tk__steps", {"count": 6, "seconds": 0.5})]), Reply(text="done"))
    reply = client.chat.completions.create(model="gpt-test", messages=USER)
    assert tool_contents(upstream.requests[1]) == ["finished 6 steps"]
    assert reply.model_extra["plugway"]["tool_calls"][0]["ok"] is True


def test_without_progress_the_same_call_times_out(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("tk__sleep", {"seconds": 3})]), Reply(text="too slow"))
    client.chat.completions.create(model="gpt-test", messages=USER)
    assert orjson.loads(tool_contents(upstream.requests[1])[0])["error"]["type"] == "timeout"


def test_mcp_progress_reaches_the_stream(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("tk__steps", {"count": 3, "seconds": 0.05})]), Reply(text="done"))
    body = {"model": "gpt-test", "messages": USER, "stream": True}
    headers = {"Authorization": f"Bearer {gateway.mint()}"}
    with httpx.stream("POST", f"{gateway.base_url}/chat/completions", json=body, headers=headers, timeout=20) as response:
        progress = [line for line in response.iter_lines() if line.startswith(": plugway tool_progress")]
    reports = [orjson.loads(line.split(" ", 3)[3]) for line in progress]
    assert [r["progress"] for r in reports] == [1, 2, 3]
    assert reports[-1]["total"] == 3 and reports[-1]["message"] == "step 3 of 3"


# -- sampling -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("era", ["modern", "legacy"])
def test_a_server_asking_for_sampling_is_answered_by_the_requests_model_and_billed(
    transport: str, era: str, servers: Servers, tmp_path: Path, upstream: FakeOpenAI, gateways: Gateways
) -> None:
    # 2026 servers ask inside the call's result (input-required rounds); older ones send a
    # sampling/createMessage request of their own. Both reach the request's model.
    tk = Tk(transport, servers, tmp_path, *(("--legacy",) if era == "legacy" else ()))
    gateway = gateways.start(plugins=[tk.plugin])
    client = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.mint(), max_retries=0, timeout=30)
    upstream.enqueue(
        Reply(tool_calls=[("tk__ask_model", {"question": "What is the capital of Portugal?"})], prompt_tokens=100, completion_tokens=10),
        Reply(text="Lisbon", prompt_tokens=30, completion_tokens=2),
        Reply(text="It is Lisbon.", prompt_tokens=150, completion_tokens=5),
    )
    reply = client.chat.completions.create(model="gpt-test", messages=USER)
    assert reply.choices[0].message.content == "It is Lisbon."
    sampling = upstream.requests[1]
    assert "tools" not in sampling and sampling["max_tokens"] == 50
    assert sampling["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is the capital of Portugal?"},
    ]
    (content,) = tool_contents(upstream.requests[2])
    assert content.startswith("the model said: Lisbon (endTurn, model ")
    gateway.flush_usage()
    with Session(gateway.gateway.engine) as session:
        rows = {r.source: r for r in session.exec(select(UsageRecord).where(UsageRecord.organisation_id == "acme"))}
    assert (rows["mcp-sampling"].prompt_tokens, rows["mcp-sampling"].completion_tokens) == (30, 2)
    assert rows["api"].total_tokens == 100 + 10 + 150 + 5


def test_sampling_beyond_the_budget_is_declined_to_the_server(tmp_path: Path, upstream: FakeOpenAI, servers: Servers, gateways: Gateways) -> None:
    tk = Tk("stdio", servers, tmp_path)
    gateway = gateways.start(plugins=[tk.plugin], orchestration={"sampling": {"max_calls_per_tool_call": 0}})
    client = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.mint(), max_retries=0, timeout=30)
    upstream.enqueue(Reply(tool_calls=[("tk__ask_model", {"question": "hi"})]), Reply(text="ok"))
    client.chat.completions.create(model="gpt-test", messages=USER)
    (content,) = tool_contents(upstream.requests[1])
    assert "sampling budget" in orjson.loads(content)["error"]["message"]
    assert len(upstream.requests) == 2  # the model was not asked


# -- images -----------------------------------------------------------------------------------------------------


def test_an_mcp_image_reaches_an_openai_model_as_a_description(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("tk__screenshot", {})]), Reply(text="a screenshot"))
    client.chat.completions.create(model="gpt-test", messages=USER)
    (content,) = tool_contents(upstream.requests[1])
    # 150 KB of PNG, repeated in structuredContent: the model reads one short line.
    assert content == "[image: image/png, 153667 bytes]"


def test_an_mcp_image_reaches_a_claude_model_as_an_image(
    tmp_path: Path, servers: Servers, fake_anthropic: FakeAnthropic, gateways: Gateways  # noqa: F811  # fixture
) -> None:
    tk = Tk("stdio", servers, tmp_path)
    settings = make_settings(
        tmp_path,
        "http://127.0.0.1:9/unused",
        providers=[{"id": "claude", "kind": "anthropic", "base_url": fake_anthropic.base_url, "api_key": "sk-ant-test-key", "timeout_s": 10, "max_retries": 0}],
        models=[{"id": "claude-test", "provider": "claude", "upstream_model": "claude-haiku-4-5"}],
        organisations=[{"id": "acme", "plugins": [tk.plugin]}],
    )
    gateway = gateways.start(settings)
    fake_anthropic.script([ClaudeReply(tool_use=[("tk__screenshot", {})]), ClaudeReply(text="I see it.")])
    client = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.mint(), max_retries=0, timeout=30)
    reply = client.chat.completions.create(model="claude-test", messages=USER)
    assert reply.choices[0].message.content == "I see it."
    second = fake_anthropic.requests[1].body
    results = [b for m in second["messages"] for b in (m["content"] if isinstance(m["content"], list) else []) if b.get("type") == "tool_result"]
    (result,) = results
    images = [b for b in result["content"] if b["type"] == "image"]
    assert images[0]["source"]["media_type"] == "image/png"
    assert len(images[0]["source"]["data"]) > 200_000  # the picture itself, not its description
    texts = [b["text"] for b in result["content"] if b["type"] == "text"]
    assert all(len(text) < 200 for text in texts)  # no base64 in the text


# -- resources ---------------------------------------------------------------------------------------------------


def test_the_model_follows_a_resource_link(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(
        Reply(tool_calls=[("tk__find_note", {"topic": "cats"})]),
        Reply(tool_calls=[("tk__read_resource", {"uri": "notes://cats"})]),
        Reply(text="Cats are covered."),
    )
    client.chat.completions.create(model="gpt-test", messages=USER)
    offered = {t["function"]["name"]: t["function"] for t in upstream.requests[0]["tools"]}
    assert "notes://welcome (welcome)" in offered["tk__read_resource"]["description"]
    assert "<notes://cats>" in tool_contents(upstream.requests[1])[0]
    assert tool_contents(upstream.requests[2])[1] == "Everything about cats."


def test_a_text_file_sent_as_a_blob_reaches_the_model_as_text(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    # Servers that read files send them as base64 blobs; a textual type is decoded, never shown as base64.
    upstream.enqueue(
        Reply(tool_calls=[("tk__export_report", {})]),
        Reply(tool_calls=[("tk__read_resource", {"uri": "files://report.csv"})]),
        Reply(text="12 in March."),
    )
    client.chat.completions.create(model="gpt-test", messages=USER)
    assert tool_contents(upstream.requests[1]) == [f"[resource: files://report.csv]\n{REPORT_CSV}"]
    assert tool_contents(upstream.requests[2])[1] == REPORT_CSV


# -- tool search -------------------------------------------------------------------------------------------------


def test_a_150_tool_server_is_answered_through_tool_search(
    transport: str, servers: Servers, tmp_path: Path, upstream: FakeOpenAI, gateways: Gateways
) -> None:
    catalogue = Tk(transport, servers, tmp_path, "--many", "150")
    gateway = gateways.start(plugins=[catalogue.plugin])
    client = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.mint(), max_retries=0, timeout=30)
    upstream.enqueue(
        Reply(tool_calls=[(TOOL_SEARCH_NAME, {"query": "list refund"})]),
        Reply(tool_calls=[("tk__list_refund_4", {"query": "March"})]),
        Reply(text="Here are the refunds."),
    )
    reply = client.chat.completions.create(model="gpt-test", messages=USER)
    assert reply.choices[0].message.content == "Here are the refunds."
    first, second, third = upstream.requests
    # More than OpenAI's 128: the request does not fail, the model gets the search tool.
    assert [t["function"]["name"] for t in first["tools"]] == [TOOL_SEARCH_NAME]
    found = orjson.loads(tool_contents(second)[0])["tools"]
    assert found[0]["name"] == "tk__list_refund_4"
    assert "tk__list_refund_4" in [t["function"]["name"] for t in second["tools"]]
    assert tool_contents(third)[1] == "list_refund_4: March"
    assert "tk__list_refund_4" in reply.model_extra["plugway"]["loaded_tools"]


def test_tool_search_saves_prompt_tokens_on_a_100_tool_catalogue(
    servers: Servers, tmp_path: Path, upstream: FakeOpenAI, capsys: pytest.CaptureFixture[str], gateways: Gateways
) -> None:
    # 31 tools of the test server + 69 catalogue entries = 100 (read_resource left out).
    catalogue = Tk("stdio", servers, tmp_path, "--many", "69")
    catalogue.plugin["exclude_tools"] = ["read_resource"]
    measured: dict[str, int] = {}
    for label, budget in (("whole catalogue", None), ("tool search", 1000)):
        directory = tmp_path / label.replace(" ", "-")
        directory.mkdir()
        gateway = gateways.start(plugins=[catalogue.plugin], orchestration={"tool_prompt_budget_tokens": budget}, directory=directory)
        client = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.mint(), max_retries=0, timeout=30)
        upstream.reset()
        upstream.enqueue(Reply(text="hello"))
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hello"}])
        tools = upstream.requests[0]["tools"]
        if budget is None:
            assert len(tools) == 100
        measured[label] = sum(estimated_tokens(tool) for tool in tools)
    saved = measured["whole catalogue"] - measured["tool search"]
    with capsys.disabled():
        print(f"\n100-tool catalogue: {measured['whole catalogue']} prompt tokens of tool definitions on every "
              f"request; with tool search {measured['tool search']} (saves {saved}, "
              f"{100 * saved / measured['whole catalogue']:.0f}%)")
    assert measured["tool search"] * 20 < measured["whole catalogue"]


# -- disconnects ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_hanging_up_cancels_the_mcp_call_at_once(
    gateway: GatewayServer, upstream: FakeOpenAI, tk: Tk, stream: bool
) -> None:
    tag = f"hangup-{uuid.uuid4().hex[:8]}"
    upstream.enqueue(Reply(tool_calls=[("tk__sleep", {"seconds": 30, "tag": tag})], prompt_tokens=20, completion_tokens=3), Reply(text="never asked"))
    key = gateway.mint()
    started = tk.markers / f"{tag}.started"
    cancelled = tk.markers / f"{tag}.cancelled"
    left_at: list[float] = []

    async def hang_up() -> None:
        body = {"model": "gpt-test", "messages": USER, "stream": stream}
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(timeout=20) as http:
            request = asyncio.ensure_future(http.post(f"{gateway.base_url}/chat/completions", json=body, headers=headers))
            deadline = time.monotonic() + 10
            while not started.exists() and time.monotonic() < deadline:  # noqa: ASYNC110  # another process writes it
                await asyncio.sleep(0.01)
            # The server has the call: now the client goes away (its connection closes).
            request.cancel()
            left_at.append(time.monotonic())
            with contextlib.suppress(asyncio.CancelledError):
                await request

    asyncio.run(hang_up())
    assert left_at, "the call never reached the server"
    while not cancelled.exists() and time.monotonic() < left_at[0] + 3:
        time.sleep(0.01)
    assert cancelled.exists(), "the server was not told"
    assert time.monotonic() - left_at[0] < 1.0, "the server was told late"
    time.sleep(1.0)
    assert len(upstream.requests) == 1, "the loop went on after the client left"
    assert not (tk.markers / f"{tag}.done").exists()


# -- crashes and slow servers --------------------------------------------------------------------------------------


def test_two_crashes_in_the_backoff_window_then_a_request_still_has_the_tools(
    tmp_path: Path, upstream: FakeOpenAI, servers: Servers, gateways: Gateways
) -> None:
    tk = Tk("stdio", servers, tmp_path)
    # Time enough for the server to come back on a busy machine: the call waits for it.
    gateway = gateways.start(plugins=[tk.plugin], orchestration={"tool_timeout_s": 15})
    client = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.mint(), max_retries=0, timeout=30)
    for _ in range(2):
        upstream.reset()
        upstream.enqueue(Reply(tool_calls=[("tk__crash", {})]), Reply(text="it crashed"))
        client.chat.completions.create(model="gpt-test", messages=USER)
        assert "exited with code 3" in tool_contents(upstream.requests[1])[0]
    assert gateway.gateway.mcp.health()["tk"]["state"] in ("backoff", "reconnecting")
    upstream.reset()
    upstream.enqueue(Reply(tool_calls=[("tk__pid", {})]), Reply(text="back"))
    client.chat.completions.create(model="gpt-test", messages=USER)
    assert "tk__pid" in {t["function"]["name"] for t in upstream.requests[0]["tools"]}
    assert tool_contents(upstream.requests[1])[0].isdigit()
    gateway.stop()
    assert tagged_processes(tk.tag) == []


def test_a_server_that_never_answers_does_not_hold_up_readiness(
    tmp_path: Path, upstream: FakeOpenAI, servers: Servers, gateways: Gateways
) -> None:
    tk = Tk("stdio", servers, tmp_path)
    silent = {"id": "silent", "mcp": {"command": [sys.executable, "-c", "import time; time.sleep(60)"]}}
    started = time.monotonic()
    gateway = gateways.start(plugins=[tk.plugin, silent], settle_mcp=["tk"])
    assert time.monotonic() - started < 8  # its connect timeout is 10 s
    ready = httpx.get(f"{gateway.url}/readyz").json()
    assert ready["status"] == "ready"
    health = gateway.gateway.mcp.health()
    assert (health["silent"]["healthy"], health["silent"]["state"]) == (False, "starting")
    assert (health["tk"]["healthy"], health["tk"]["state"]) == (True, "ready")


# -- sampling limits: the organisation's budget, the key's daily tokens, the per-call token budget ---
# The test server gets one more tool, ``ask_twice``, that asks the client's model two questions
# in one call (the pre-2026 ``sampling/createMessage`` request), so that what the first answer
# spent can stop the second.

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


def ask_twice_plugin(tmp_path: Path) -> JSON:
    script = tmp_path / "ask_twice_server.py"
    script.write_text(ASK_TWICE_SERVER)
    return {"id": "tk", "mcp": {"command": [sys.executable, str(script)]}}


def run_ask_twice(gateways: Gateways, tmp_path: Path, upstream: FakeOpenAI, first_sampling: Reply, *, org: str = "acme", key_limits: JSON | None = None, **settings: Any) -> tuple[str, list[JSON]]:
    """One chat request whose tool call samples twice; the tool's result and the upstream's requests."""
    gateway = gateways.start(plugins=[ask_twice_plugin(tmp_path)], **settings)
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


def test_a_spent_organisation_budget_stops_sampling(tmp_path: Path, upstream: FakeOpenAI, gateways: Gateways) -> None:
    # gpt-test costs $1 per million input tokens: the first answer's 20,000 tokens spend the $0.01 budget.
    content, requests = run_ask_twice(
        gateways, tmp_path, upstream, Reply(text="Lisbon", prompt_tokens=20_000, completion_tokens=2),
        org="thrifty", extra_orgs=[{"id": "thrifty", "monthly_budget_usd": 0.01, "plugins": [ask_twice_plugin(tmp_path)]}],
        orchestration={"sampling": {"max_tokens_per_tool_call": 100_000}},  # only the budget can stop it
    )
    first, second = content.split(" | ")
    assert first == "answer: Lisbon"
    assert second.startswith("refused:") and "cannot be asked now" in second and "budget" in second.lower()
    assert len(requests) == 3  # the tool round, one sampling, the final round: the second question never reached the model


def test_a_keys_spent_daily_tokens_stop_sampling(tmp_path: Path, upstream: FakeOpenAI, gateways: Gateways) -> None:
    content, requests = run_ask_twice(
        gateways, tmp_path, upstream, Reply(text="Lisbon", prompt_tokens=1_000, completion_tokens=2), key_limits={"daily_tokens": 500}
    )
    first, second = content.split(" | ")
    assert first == "answer: Lisbon"
    assert second.startswith("refused:") and "daily token limit" in second and "cannot be asked now" in second
    assert len(requests) == 3


def test_the_per_call_sampling_token_budget_stops_further_sampling(tmp_path: Path, upstream: FakeOpenAI, gateways: Gateways) -> None:
    content, requests = run_ask_twice(
        gateways, tmp_path, upstream, Reply(text="Lisbon", prompt_tokens=60, completion_tokens=50),
        orchestration={"sampling": {"max_tokens_per_tool_call": 100}},
    )
    first, second = content.split(" | ")
    assert first == "answer: Lisbon"
    assert second.startswith("refused:") and "sampling budget of 100 tokens" in second
    assert len(requests) == 3
    assert requests[1]["max_tokens"] == 100  # the server asked for 500: the call's budget caps it


def test_with_budget_left_both_questions_are_answered_and_never_with_tools(tmp_path: Path, upstream: FakeOpenAI, gateways: Gateways) -> None:
    content, requests = run_ask_twice(gateways, tmp_path, upstream, Reply(text="Lisbon", prompt_tokens=30, completion_tokens=2))
    assert content == "answer: Lisbon | answer: Lisbon twice?"
    loop_round, *sampling, final = requests
    assert "tk__ask_twice" in [tool["function"]["name"] for tool in loop_round["tools"]]
    assert len(sampling) == 2
    for request in sampling:
        assert not {"tools", "tool_choice", "parallel_tool_calls", "functions"} & set(request)
        assert all(message["role"] in ("system", "user") for message in request["messages"])
    assert final["tools"] == loop_round["tools"]
