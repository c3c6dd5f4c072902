"""Code mode through the real gateway: scripts calling tools, the sandbox's limits, escapes, cancellation,
and the same guardrail, approval, usage and trace outcomes as classic calls.

The model's side is the fake OpenAI upstream: it answers the first round with a
``plugway__run_script`` call holding the test's script, and the second with text.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import orjson
import pytest
from sqlmodel import Session, select

from runtime.storage.models import UsageRecord
from tests.codemode import shop_plugin
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.support import GatewayServer

USER = [{"role": "user", "content": "What did ada@example.com spend?"}]
CODE = {"mode": "code"}


def run(client: openai.OpenAI, upstream: FakeOpenAI, code: str, **extra: Any) -> tuple[Any, str]:
    """Have the model run ``code``; the completion and the script's result as the model read it."""
    upstream.enqueue(Reply(tool_calls=[("plugway__run_script", {"code": code})], prompt_tokens=30, completion_tokens=9), Reply(text="done"))
    completion = client.chat.completions.create(model="gpt-test", messages=USER, extra_body=extra or None)  # type: ignore[arg-type]
    return completion, str(upstream.requests[1]["messages"][-1]["content"])


def error_message(content: str) -> str:
    error = orjson.loads(content)["error"]
    assert error["type"] == "script_error"
    return str(error["message"])


def script_entry(completion: Any) -> dict[str, Any]:
    (entry,) = completion.model_extra["plugway"]["tool_calls"]
    assert entry["name"] == "plugway__run_script"
    return dict(entry)


# -- the tools the model is offered ---------------------------------------------------------------


@pytest.mark.gateway(orchestration=CODE)
def test_code_mode_offers_three_fixed_tools_with_typed_signatures(shop: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="hello"))
    shop.chat.completions.create(model="gpt-test", messages=USER)
    tools = {t["function"]["name"]: t["function"] for t in upstream.requests[0]["tools"]}
    assert set(tools) == {"plugway__find_tools", "plugway__tool_signatures", "plugway__run_script"}
    index = tools["plugway__run_script"]["description"]
    assert "async def shop__order_total(order_ids: list[str], currency: str = 'EUR') -> Any  # Sum the totals of some orders." in index
    assert "async def shop__find_customer(email: str) -> Any" in index


@pytest.mark.gateway(orchestration=CODE)
def test_tool_signatures_and_find_tools_answer_in_python(shop: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(
        Reply(tool_calls=[("plugway__find_tools", {"query": "customer orders"}), ("plugway__tool_signatures", {"names": ["shop__order_total", "nope"]})]),
        Reply(text="done"),
    )
    completion = shop.chat.completions.create(model="gpt-test", messages=USER)
    found, signatures = (m["content"] for m in upstream.requests[1]["messages"][-2:])
    names = [f["name"] for f in orjson.loads(found)["functions"]]
    assert "shop__list_orders" in names
    assert signatures.startswith("async def shop__order_total(order_ids: list[str], currency: str = 'EUR') -> Any:\n    \"\"\"Sum the totals of some orders.")
    assert "# Unknown: nope." in signatures
    # The gateway's own look-ups are not tool calls of a plugin: no usage, but in the trace.
    assert [c["name"] for c in completion.model_extra["plugway"]["tool_calls"]] == ["plugway__find_tools", "plugway__tool_signatures"]


# -- scripts calling tools ------------------------------------------------------------------------


@pytest.mark.gateway(orchestration=CODE)
def test_a_script_calls_dependent_tools_in_sequence_in_one_round(shop: openai.OpenAI, upstream: FakeOpenAI) -> None:
    code = (
        "customer = await shop__find_customer(email='ada@example.com')\n"
        "orders = await shop__list_orders(customer['customer_id'])\n"
        "print('orders:', len(orders))\n"
        "await shop__order_total(order_ids=[o['id'] for o in orders])\n"
    )
    completion, content = run(shop, upstream, code)
    assert content == 'orders: 2\n{"total":42.5,"currency":"EUR"}'
    trace = completion.model_extra["plugway"]
    assert (trace["rounds"], trace["mode"]) == (2, "code")
    entry = script_entry(completion)
    assert entry["ok"] is True
    assert [c["name"] for c in entry["calls"]] == ["shop__find_customer", "shop__list_orders", "shop__order_total"]
    assert len(upstream.requests) == 2


@pytest.mark.gateway(orchestration=CODE)
def test_independent_calls_in_gather_run_concurrently(shop: openai.OpenAI, upstream: FakeOpenAI) -> None:
    code = "import asyncio\na, b = await asyncio.gather(testkit__slow(seconds=0.4), testkit__slow(seconds=0.4))\n[a, b]"
    _, content = run(shop, upstream, code)
    first, second = orjson.loads(content)
    # Each started before the other ended.
    assert first["started"] < second["ended"] and second["started"] < first["ended"]


@pytest.mark.gateway(orchestration=CODE)
def test_an_exception_becomes_a_readable_error_with_its_line(shop: openai.OpenAI, upstream: FakeOpenAI) -> None:
    code = "print('before')\nx = 1\nraise ValueError('no such thing')\n"
    completion, content = run(shop, upstream, code)
    message = error_message(content)
    assert message.startswith("The script failed at line 3: ValueError: no such thing")
    assert "Printed before the error:\nbefore" in message
    assert script_entry(completion)["ok"] is False


@pytest.mark.gateway(orchestration=CODE)
def test_a_failing_tool_raises_in_the_script_where_it_can_be_caught(shop: openai.OpenAI, upstream: FakeOpenAI) -> None:
    code = "try:\n    await shop__find_customer(email='eve@example.com')\nexcept RuntimeError as e:\n    print('caught:', e)\n"
    completion, content = run(shop, upstream, code)
    assert content == "caught: shop__find_customer: no customer with email eve@example.com\n"
    (call,) = script_entry(completion)["calls"]
    assert (call["ok"], call["error"]) == (False, "no customer with email eve@example.com")


# -- limits ---------------------------------------------------------------------------------------


@pytest.mark.gateway(orchestration={**CODE, "code_mode": {"timeout_s": 0.5}})
def test_a_loop_that_never_ends_hits_the_time_limit(shop: openai.OpenAI, upstream: FakeOpenAI) -> None:
    _, content = run(shop, upstream, "n = 0\nwhile True:\n    n += 1\n")
    assert "TimeoutError" in error_message(content)
    assert "time limit" in error_message(content)


@pytest.mark.gateway(orchestration={**CODE, "code_mode": {"timeout_s": 0.5}})
def test_a_script_that_sleeps_in_a_loop_hits_the_time_limit(shop: openai.OpenAI, upstream: FakeOpenAI) -> None:
    _, content = run(shop, upstream, "import asyncio\nwhile True:\n    await asyncio.sleep(0.2)\n")
    assert "TimeoutError" in error_message(content)


@pytest.mark.gateway(orchestration={**CODE, "code_mode": {"max_memory_mb": 8}})
def test_a_script_that_grows_without_end_hits_the_memory_limit(shop: openai.OpenAI, upstream: FakeOpenAI) -> None:
    _, content = run(shop, upstream, "chunks = []\nwhile True:\n    chunks.append('x' * 100000)\n")
    assert "MemoryError: memory limit exceeded" in error_message(content)


@pytest.mark.gateway(orchestration={**CODE, "code_mode": {"max_recursion_depth": 50}})
def test_deep_recursion_hits_the_recursion_limit(shop: openai.OpenAI, upstream: FakeOpenAI) -> None:
    _, content = run(shop, upstream, "def down(n):\n    return down(n + 1)\ndown(0)\n")
    assert "RecursionError" in error_message(content)


@pytest.mark.gateway(orchestration={**CODE, "code_mode": {"max_tool_calls": 3}})
def test_a_script_may_make_only_so_many_tool_calls(shop: openai.OpenAI, upstream: FakeOpenAI) -> None:
    completion, content = run(shop, upstream, "for i in range(10):\n    await testkit__echo(text='x')\n")
    assert "more than 3 tool calls" in error_message(content)
    assert len(script_entry(completion)["calls"]) == 3


@pytest.mark.gateway(orchestration={**CODE, "tool_timeout_s": 0.3})
def test_a_tool_that_times_out_raises_timeout_error_at_its_line(shop: openai.OpenAI, upstream: FakeOpenAI) -> None:
    completion, content = run(shop, upstream, "x = 1\nawait testkit__slow(seconds=5)\n")
    message = error_message(content)
    assert message.startswith("The script failed at line 2: TimeoutError: testkit__slow: The tool did not finish within")
    (call,) = script_entry(completion)["calls"]
    assert call["error"] == "timeout"


@pytest.mark.gateway(orchestration=CODE)
def test_a_tool_the_organisation_does_not_have_is_a_name_error(shop: openai.OpenAI, upstream: FakeOpenAI) -> None:
    # clock is a bundled plugin, but not one of this organisation's.
    completion, content = run(shop, upstream, "await clock__now(timezone='UTC')\n")
    assert "NameError: name 'clock__now' is not defined" in error_message(content)
    assert script_entry(completion)["calls"] == []


@pytest.mark.gateway(orchestration=CODE)
def test_arguments_failing_the_schema_raise_value_error_and_the_tool_does_not_run(shop: openai.OpenAI, upstream: FakeOpenAI) -> None:
    completion, content = run(shop, upstream, "await testkit__echo(text=5)\n")
    message = error_message(content)
    assert "ValueError: testkit__echo: Arguments do not match the tool's schema at text: 5 is not of type 'string'" in message
    (call,) = script_entry(completion)["calls"]
    assert call["error"] == "schema validation failed"


# -- escapes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "refusal"),
    [
        ("import os\nos.getenv('HOME')", "RuntimeError: 'os.getenv' is not supported"),
        ("import subprocess", "ModuleNotFoundError: No module named 'subprocess'"),
        ("import socket", "ModuleNotFoundError: No module named 'socket'"),
        ("open('/etc/passwd').read()", "PermissionError"),
        ("__import__('os')", "NameError: name '__import__' is not defined"),
        ("(1).__class__.__subclasses__()", "AttributeError"),
        ("testkit__echo.__globals__", "AttributeError"),
        ("import sys\nsys.modules['os']", "AttributeError"),
        ("eval(\"__import__('os')\")", "NameError: name '__import__' is not defined"),
    ],
)
@pytest.mark.gateway(orchestration=CODE)
def test_escape_attempts_are_refused_inside_the_sandbox(shop: openai.OpenAI, upstream: FakeOpenAI, code: str, refusal: str) -> None:
    completion, content = run(shop, upstream, code)
    assert refusal in error_message(content)
    assert script_entry(completion)["ok"] is False


# -- cancellation -----------------------------------------------------------------------------------


@pytest.mark.gateway(orchestration=CODE)
def test_a_client_that_hangs_up_cancels_the_script_and_its_running_tools(shop_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    tag = f"hang-{time.monotonic_ns()}"
    code = f"import asyncio\nawait asyncio.gather(shop__hang(tag='{tag}'), shop__hang(tag='{tag}'))\n"
    upstream.enqueue(Reply(tool_calls=[("plugway__run_script", {"code": code})]), Reply(text="never asked"))
    body = {"model": "gpt-test", "messages": USER, "stream": True}
    headers = {"Authorization": f"Bearer {shop_gateway.mint()}"}
    nested = 0
    with httpx.stream("POST", f"{shop_gateway.base_url}/chat/completions", json=body, headers=headers, timeout=10) as response:
        for line in response.iter_lines():
            if line.startswith(": plugway tool_call") and "parent_call_id" in line:
                nested += 1
                if nested == 2:
                    break
    deadline = time.monotonic() + 10
    while shop_plugin.CANCELLED.count(tag) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert shop_plugin.STARTED.count(tag) == 2
    assert shop_plugin.CANCELLED.count(tag) == 2
    assert len(upstream.requests) == 1


# -- the same outcomes as classic calls -----------------------------------------------------------

PII = [{"key": "pii", "kind": "pii", "categories": ["email"], "action": "redact", "apply_to": ["tool_results"]}]
GUARDED = [{"id": "acme", "plugins": [{"id": "shop"}], "guardrails": PII, "guardrails_default": ["pii"]}]


@pytest.mark.gateway(organisations=GUARDED)
def test_guardrails_redact_a_scripts_tool_results_as_they_do_a_classic_calls(shop: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("shop__contact_card", {"customer_id": "C-100"})]), Reply(text="done"))
    shop.chat.completions.create(model="gpt-test", messages=USER)
    classic = upstream.requests[1]["messages"][-1]["content"]
    upstream.reset()
    _, content = run(shop, upstream, "await shop__contact_card(customer_id='C-100')", orchestration_mode="code")
    assert "ada@example.com" not in classic
    assert content == classic


@pytest.mark.gateway(orchestration=CODE)
def test_usage_counts_the_scripts_tool_calls_as_classic_calls_would(shop_gateway: GatewayServer, shop: openai.OpenAI, upstream: FakeOpenAI) -> None:
    run(shop, upstream, "import asyncio\nawait asyncio.gather(testkit__echo(text='a'), testkit__echo(text='b'))")
    records: list[UsageRecord] = []
    deadline = time.monotonic() + 10
    while not records and time.monotonic() < deadline:
        shop_gateway.flush_usage()
        with Session(shop_gateway.gateway.engine) as session:
            records = list(session.exec(select(UsageRecord).where(UsageRecord.organisation_id == "acme")))
        time.sleep(0.02)
    (record,) = records
    assert (record.tool_calls, record.prompt_tokens, record.completion_tokens) == (2, 41, 16)


# -- choosing the mode ----------------------------------------------------------------------------


def offered(upstream: FakeOpenAI) -> set[str]:
    return {t["function"]["name"] for t in upstream.requests[-1].get("tools") or ()}


@pytest.mark.gateway(orchestration={"mode": "auto", "code_mode": {"auto_min_tools": 10}})
def test_auto_chooses_code_for_a_large_catalogue_and_classic_for_a_small_one(shop: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="a"), Reply(text="b"))
    shop.chat.completions.create(model="gpt-test", messages=USER)  # shop + calculator + testkit: 15 tools
    assert "plugway__run_script" in offered(upstream)
    shop.chat.completions.create(model="gpt-test", messages=USER, extra_body={"enabled_plugin_ids": ["calculator"]})
    assert offered(upstream) == {"calculator__evaluate"}


@pytest.mark.gateway(orchestration={"mode": "auto", "code_mode": {"auto_min_tools": 1000}, "tool_prompt_budget_tokens": 200})
def test_auto_chooses_code_when_the_catalogue_needs_tool_search(shop: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="a"))
    shop.chat.completions.create(model="gpt-test", messages=USER)
    assert "plugway__run_script" in offered(upstream)
    # Over a catalogue too large to list, the script tool points at the search.
    run_script = next(t for t in upstream.requests[-1]["tools"] if t["function"]["name"] == "plugway__run_script")
    assert "find the ones you need with plugway__find_tools first" in run_script["function"]["description"]


@pytest.mark.gateway(organisations=[{"id": "acme", "plugins": [{"id": "shop"}], "orchestration": {"mode": "code"}}])
def test_the_request_overrides_the_organisations_mode(shop: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="a"), Reply(text="b"))
    shop.chat.completions.create(model="gpt-test", messages=USER)
    assert "plugway__run_script" in offered(upstream)
    shop.chat.completions.create(model="gpt-test", messages=USER, extra_body={"orchestration_mode": "classic"})
    assert "shop__find_customer" in offered(upstream)
    assert "orchestration_mode" not in upstream.requests[-1]


# -- sampling and progress inside a script ----------------------------------------------------------


@pytest.mark.gateway(orchestration=CODE)
def test_a_tool_in_a_script_samples_through_the_requests_model(shop: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(
        Reply(tool_calls=[("plugway__run_script", {"code": "await testkit__ask_model(question='ping?')"})]),
        Reply(text="pong", completion_tokens=1),
        Reply(text="done"),
    )
    shop.chat.completions.create(model="gpt-test", messages=USER)
    assert upstream.requests[1]["messages"][-1]["content"] == "ping?"
    assert upstream.requests[2]["messages"][-1]["content"] == "the model said: pong (endTurn, 1 tokens)"


@pytest.mark.gateway(orchestration=CODE)
def test_progress_of_a_tool_in_a_script_reaches_the_stream(shop_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("plugway__run_script", {"code": "await testkit__steps(count=3, seconds=0.05)"})]), Reply(text="done"))
    body = {"model": "gpt-test", "messages": USER, "stream": True}
    with httpx.stream("POST", f"{shop_gateway.base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {shop_gateway.mint()}"}, timeout=30) as response:
        lines = list(response.iter_lines())
    nested = [orjson.loads(line.split(" ", 3)[3]) for line in lines if line.startswith(": plugway tool_call ") and "parent_call_id" in line]
    progress = [orjson.loads(line.split(" ", 3)[3]) for line in lines if line.startswith(": plugway tool_progress ")]
    (call,) = nested
    assert [(p["call_id"], p["progress"], p["message"]) for p in progress] == [(call["call_id"], n, f"step {n} of 3") for n in (1, 2, 3)]
    assert upstream.requests[1]["messages"][-1]["content"] == "finished 3 steps"


BLOCKING = [{"id": "acme", "plugins": [{"id": "shop"}], "guardrails": [{**PII[0], "action": "block"}], "guardrails_default": ["pii"]}]


@pytest.mark.gateway(organisations=BLOCKING)
def test_a_result_a_guardrail_withholds_is_withheld_from_the_script_as_from_the_model(shop: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("shop__contact_card", {"customer_id": "C-100"})]), Reply(text="done"))
    shop.chat.completions.create(model="gpt-test", messages=USER)
    classic = orjson.loads(upstream.requests[1]["messages"][-1]["content"])["error"]
    upstream.reset()
    code = "try:\n    await shop__contact_card(customer_id='C-100')\nexcept PermissionError as e:\n    print(e)\n"
    completion, content = run(shop, upstream, code, orchestration_mode="code")
    assert classic["type"] == "guardrail_block"
    assert content == f"shop__contact_card: {classic['message']}\n"
    (call,) = script_entry(completion)["calls"]
    assert call["error"] == "withheld by guardrail"
