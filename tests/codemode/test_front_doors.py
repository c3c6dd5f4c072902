"""A script run on every front door, streamed and not, in each one's own shape, through the official SDKs;
``orchestration_mode`` checked on each; approvals of a script; the demo model writing scripts offline."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.support import Gateways, GatewayServer

CODE = {"mode": "code"}
SCRIPT = (
    "import asyncio\n"
    "customer = await shop__find_customer(email='ada@example.com')\n"
    "orders = await shop__list_orders(customer_id=customer['customer_id'])\n"
    "print(len(orders), 'orders')\n"
    "await shop__order_total(order_ids=[o['id'] for o in orders])\n"
)
RESULT = '2 orders\n{"total":42.5,"currency":"EUR"}'
NESTED = ["find_customer", "list_orders", "order_total"]


def script_round(upstream: FakeOpenAI, code: str = SCRIPT) -> None:
    upstream.enqueue(
        Reply(tool_calls=[("plugway__run_script", {"code": code})], prompt_tokens=40, completion_tokens=20),
        Reply(text="Ada spent 42.50 EUR.", prompt_tokens=60, completion_tokens=6),
    )


def openai_client(server: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=server.mint(), max_retries=0, timeout=30)


def claude_client(server: GatewayServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=server.mint(), max_retries=0, timeout=30, default_headers={"anthropic-beta": "mcp-client-2025-11-20"})


# -- chat completions -----------------------------------------------------------------------------


@pytest.mark.gateway(orchestration=CODE)
def test_chat_trace_shows_the_script_and_the_calls_under_it(shop_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    script_round(upstream)
    completion = openai_client(shop_gateway).chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "spend?"}])
    assert completion.choices[0].message.content == "Ada spent 42.50 EUR."
    (entry,) = completion.model_extra["plugway"]["tool_calls"]  # type: ignore[index]
    assert [c["name"] for c in entry["calls"]] == [f"shop__{n}" for n in NESTED]
    assert upstream.requests[1]["messages"][-1]["content"] == RESULT


@pytest.mark.gateway(orchestration=CODE)
def test_chat_stream_comments_name_the_script_and_its_calls(shop_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    script_round(upstream)
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "spend?"}], "stream": True}
    with httpx.stream("POST", f"{shop_gateway.base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {shop_gateway.mint()}"}, timeout=30) as response:
        lines = list(response.iter_lines())
    calls = [orjson.loads(line.split(" ", 3)[3]) for line in lines if line.startswith(": plugway tool_call ")]
    results = [orjson.loads(line.split(" ", 3)[3]) for line in lines if line.startswith(": plugway tool_result ")]
    script, *nested = calls
    assert (script["name"], script["script"]) == ("plugway__run_script", SCRIPT)
    assert [c["name"] for c in nested] == [f"shop__{n}" for n in NESTED]
    assert {c["parent_call_id"] for c in nested} == {script["call_id"]}
    assert [r["name"] for r in results] == [*(f"shop__{n}" for n in NESTED), "plugway__run_script"]
    assert len(results[-1]["calls"]) == 3
    # The official SDK reads the same stream as a normal one.
    script_round(upstream)
    stream = openai_client(shop_gateway).chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "spend?"}], stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == "Ada spent 42.50 EUR."


@pytest.mark.gateway(orchestration=CODE)
def test_chat_refuses_an_unknown_mode_naming_the_field(shop_gateway: GatewayServer) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        openai_client(shop_gateway).chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}], extra_body={"orchestration_mode": "turbo"})
    assert raised.value.body["param"] == "orchestration_mode"  # type: ignore[index]
    assert "'orchestration_mode' must be one of 'classic', 'code' or 'auto'" in raised.value.message


# -- Responses --------------------------------------------------------------------------------------


def check_code_interpreter_items(output: list[Any]) -> None:
    kinds = [item.type for item in output]
    assert kinds == ["mcp_list_tools", "code_interpreter_call", "mcp_call", "mcp_call", "mcp_call", "message"]
    script = output[1]
    assert (script.code, script.status, script.container_id) == (SCRIPT, "completed", "plugway-monty")
    assert script.outputs[0].type == "logs" and script.outputs[0].logs == RESULT
    assert [(item.server_label, item.name) for item in output[2:5]] == [("shop", n) for n in NESTED]
    assert json.loads(output[4].output) == {"total": 42.5, "currency": "EUR"}


@pytest.mark.gateway(plugins=[{"id": "shop"}], orchestration=CODE)
def test_responses_show_a_script_as_a_code_interpreter_call_with_its_mcp_calls(shop_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    script_round(upstream)
    response = openai_client(shop_gateway).responses.create(model="gpt-test", input="spend?")
    check_code_interpreter_items(response.output)
    assert response.output_text == "Ada spent 42.50 EUR."


@pytest.mark.gateway(plugins=[{"id": "shop"}], orchestration=CODE)
def test_responses_stream_code_interpreter_events(shop_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    script_round(upstream)
    kinds: list[str] = []
    with openai_client(shop_gateway).responses.stream(model="gpt-test", input="spend?") as stream:
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_response()
    for kind in ("response.code_interpreter_call.in_progress", "response.code_interpreter_call_code.done", "response.code_interpreter_call.interpreting", "response.code_interpreter_call.completed"):
        assert kind in kinds
    assert kinds.index("response.code_interpreter_call.interpreting") < kinds.index("response.mcp_call.completed") < kinds.index("response.code_interpreter_call.completed")
    check_code_interpreter_items(final.output)


@pytest.mark.gateway(plugins=[{"id": "shop"}])
def test_responses_take_the_mode_from_the_request_and_refuse_an_unknown_one(shop_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    script_round(upstream)
    response = openai_client(shop_gateway).responses.create(model="gpt-test", input="spend?", extra_body={"orchestration_mode": "code"})
    check_code_interpreter_items(response.output)
    with pytest.raises(openai.BadRequestError) as raised:
        openai_client(shop_gateway).responses.create(model="gpt-test", input="x", extra_body={"orchestration_mode": 3})
    assert raised.value.body["param"] == "orchestration_mode"  # type: ignore[index]


APPROVING = [{"id": "acme", "plugins": [{"id": "shop", "require_approval": "always"}, {"id": "calculator"}], "orchestration": CODE}]


@pytest.mark.gateway(organisations=APPROVING)
def test_a_script_naming_a_tool_that_needs_approval_waits_for_it_and_runs_once_approved(shop_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    script_round(upstream)
    client = openai_client(shop_gateway)
    first = client.responses.create(model="gpt-test", input="spend?")
    (request,) = [item for item in first.output if item.type == "mcp_approval_request"]
    assert (request.server_label, request.name, json.loads(request.arguments)) == ("plugway", "run_script", {"code": SCRIPT})
    assert len(upstream.requests) == 1  # nothing ran
    second = client.responses.create(
        model="gpt-test",
        previous_response_id=first.id,
        input=[{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}],
    )
    kinds = [item.type for item in second.output]
    assert kinds[:4] == ["code_interpreter_call", "mcp_call", "mcp_call", "mcp_call"]
    assert second.output[0].outputs[0].logs == RESULT  # type: ignore[union-attr]


@pytest.mark.gateway(organisations=APPROVING)
def test_a_refused_script_does_not_run(shop_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    script_round(upstream)
    client = openai_client(shop_gateway)
    first = client.responses.create(model="gpt-test", input="spend?")
    (request,) = [item for item in first.output if item.type == "mcp_approval_request"]
    second = client.responses.create(
        model="gpt-test", previous_response_id=first.id, input=[{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": False}]
    )
    (script,) = [item for item in second.output if item.type == "code_interpreter_call"]
    assert script.status == "failed"
    assert "did not approve" in script.outputs[0].logs  # type: ignore[index, union-attr]
    assert not [item for item in second.output if item.type == "mcp_call"]


@pytest.mark.gateway(organisations=APPROVING)
def test_a_script_naming_only_tools_free_to_run_does_not_wait(shop_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    script_round(upstream, "await calculator__evaluate(expression='6 * 7')")
    response = openai_client(shop_gateway).responses.create(model="gpt-test", input="6*7")
    assert [item.type for item in response.output][-3:] == ["code_interpreter_call", "mcp_call", "message"]


# -- Messages ---------------------------------------------------------------------------------------


def check_code_execution_blocks(content: list[Any]) -> None:
    kinds = [block.type for block in content]
    assert kinds == ["server_tool_use", *["mcp_tool_use", "mcp_tool_result"] * 3, "code_execution_tool_result", "text"]
    use, result = content[0], content[7]
    assert (use.name, use.input) == ("code_execution", {"code": SCRIPT})
    assert result.tool_use_id == use.id
    assert (result.content.type, result.content.stdout, result.content.return_code) == ("code_execution_result", RESULT, 0)
    assert [block.name for block in content[1:7:2]] == NESTED
    # Each call the script made names the script as its caller.
    assert all(block.model_extra["caller"] == {"type": "code_execution_20250825", "tool_id": use.id} for block in content[1:7:2])


@pytest.mark.gateway(plugins=[{"id": "shop"}], orchestration=CODE)
def test_messages_show_a_script_as_code_execution_blocks(shop_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    script_round(upstream)
    message = claude_client(shop_gateway).messages.create(model="gpt-test", max_tokens=200, messages=[{"role": "user", "content": "spend?"}])
    check_code_execution_blocks(message.content)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (100, 26)


@pytest.mark.gateway(plugins=[{"id": "shop"}])
def test_messages_stream_a_script_run_chosen_by_the_request(shop_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    script_round(upstream)
    with claude_client(shop_gateway).messages.stream(
        model="gpt-test", max_tokens=200, messages=[{"role": "user", "content": "spend?"}], extra_body={"orchestration_mode": "code"}
    ) as stream:
        final = stream.get_final_message()
    check_code_execution_blocks(final.content)
    with pytest.raises(anthropic.BadRequestError) as raised:
        claude_client(shop_gateway).messages.create(model="gpt-test", max_tokens=20, messages=[{"role": "user", "content": "x"}], extra_body={"orchestration_mode": "fast"})
    assert "orchestration_mode" in raised.value.message


# -- endpoints --------------------------------------------------------------------------------------

ENDPOINTS = [
    {"slug": "coded", "model": "gpt-test", "plugins": ["shop"], "orchestration": {"mode": "code"}},
    {"slug": "plain", "model": "gpt-test", "plugins": ["shop"]},
]


@pytest.mark.gateway(organisations=[{"id": "acme", "plugins": [{"id": "shop"}], "endpoints": ENDPOINTS}])
def test_an_endpoint_runs_code_mode_from_its_configuration_or_the_request(shop_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    headers = {"Authorization": f"Bearer {shop_gateway.mint()}"}
    script_round(upstream)
    answer = httpx.post(f"{shop_gateway.url}/api/acme/coded", json={"message": "spend?"}, headers=headers, timeout=30).json()
    assert answer["content"] == "Ada spent 42.50 EUR."
    assert upstream.requests[1]["messages"][-1]["content"] == RESULT
    script_round(upstream)
    with httpx.stream("POST", f"{shop_gateway.url}/api/acme/plain", json={"message": "spend?", "stream": True, "orchestration_mode": "code"}, headers=headers, timeout=30) as response:
        lines = list(response.iter_lines())
    assert any(line.startswith(": plugway tool_call ") and "plugway__run_script" in line for line in lines)
    assert upstream.requests[-1]["messages"][-1]["content"] == RESULT
    refused = httpx.post(f"{shop_gateway.url}/api/acme/plain", json={"message": "x", "orchestration_mode": "sometimes"}, headers=headers, timeout=30)
    assert refused.status_code == 400
    assert refused.json() == {"ok": False, "error": "'orchestration_mode' must be one of 'classic', 'code' or 'auto'.", "code": "invalid_request"}


# -- the demo model ---------------------------------------------------------------------------------


@pytest.fixture
def demo_gateway(gateways: Gateways) -> GatewayServer:
    return gateways.start(
        upstream_url="http://127.0.0.1:9",
        providers=[{"id": "demo", "kind": "demo"}],
        models=[{"id": "demo", "provider": "demo"}],
        organisations=[{"id": "acme", "plugins": [{"id": "clock"}, {"id": "calculator"}]}],
        orchestration={"mode": "code"},
    )


def test_the_demo_model_writes_a_script_offline(demo_gateway: GatewayServer) -> None:
    client = openai_client(demo_gateway)
    answer = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "What is 17 * 23?"}])
    assert answer.choices[0].message.content == "[demo model] 17 * 23 = 391"
    trace = answer.model_extra["plugway"]  # type: ignore[index]
    assert (trace["mode"], trace["rounds"]) == ("code", 2)
    (script,) = trace["tool_calls"]
    assert [c["name"] for c in script["calls"]] == ["calculator__evaluate"]
    both = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "What time is it in Tokyo, and what is 6 * 7?"}])
    text = both.choices[0].message.content or ""
    assert "6 * 7 = 42" in text and "Asia/Tokyo" in text
    (script,) = both.model_extra["plugway"]["tool_calls"]  # type: ignore[index]
    assert sorted(c["name"] for c in script["calls"]) == ["calculator__evaluate", "clock__now"]


@pytest.mark.gateway(plugins=[{"id": "shop"}], orchestration=CODE)
def test_messages_take_a_code_mode_answer_back_as_history(shop_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    script_round(upstream)
    client = claude_client(shop_gateway)
    first = client.messages.create(model="gpt-test", max_tokens=200, messages=[{"role": "user", "content": "spend?"}])
    upstream.enqueue(Reply(text="You are welcome."))
    history: list[Any] = [
        {"role": "user", "content": "spend?"},
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
        {"role": "user", "content": "thanks"},
    ]
    second = client.messages.create(model="gpt-test", max_tokens=200, messages=history)
    assert second.content[0].text == "You are welcome."  # type: ignore[union-attr]
    sent = upstream.requests[-1]["messages"]
    # The model sees its own script call and the script's result; not the calls the script made.
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "assistant", "user"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "plugway__run_script", "arguments": orjson.dumps({"code": SCRIPT}).decode()}
    assert sent[2]["content"] == RESULT


@pytest.mark.gateway(plugins=[{"id": "shop"}], orchestration=CODE)
def test_responses_take_a_code_mode_output_back_as_input(shop_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    script_round(upstream)
    client = openai_client(shop_gateway)
    first = client.responses.create(model="gpt-test", input="spend?", store=False)
    upstream.enqueue(Reply(text="You are welcome."))
    replay: list[Any] = [{"role": "user", "content": "spend?"}, *(item.model_dump(exclude_none=True) for item in first.output), {"role": "user", "content": "thanks"}]
    second = client.responses.create(model="gpt-test", input=replay, store=False)
    assert second.output_text == "You are welcome."
    sent = upstream.requests[-1]["messages"]
    # The model sees its own script call and the script's result; not the calls the script made.
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "assistant", "user"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "plugway__run_script", "arguments": orjson.dumps({"code": SCRIPT}).decode()}
    assert sent[2]["content"] == RESULT
