"""Usage an upstream reports is checked before it is billed: negative counts, counts beyond 64
bits and inconsistent totals are replaced by plugway's own count, and the client's request
still succeeds, streamed or not, on every front door."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from runtime.json_types import JSON
from tests.e2e.conftest import anthropic_provider, openai_provider
from tests.fakes import anthropic_server
from tests.fakes.anthropic_server import FakeAnthropic, fake_anthropic, fake_anthropic_server
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.support import Gateways, GatewayServer, make_settings

__all__ = ["fake_anthropic", "fake_anthropic_server"]  # fixtures used by name

BAD_USAGE = {
    "negative": {"prompt_tokens": -5000, "completion_tokens": -3000, "total_tokens": -8000},
    "beyond 64 bits": {"prompt_tokens": 2**64 + 5, "completion_tokens": 2**63, "total_tokens": 2**65},
    "not numbers": {"prompt_tokens": "many", "completion_tokens": None, "total_tokens": [1]},
}
BAD_ANTHROPIC_USAGE = {
    "negative": {"input_tokens": -5000, "output_tokens": -3000},
    "beyond 64 bits": {"input_tokens": 2**64 + 5, "output_tokens": 2**63},
    "not numbers": {"input_tokens": "many", "output_tokens": [3], "cache_read_input_tokens": "x"},
}


@pytest.fixture
def server(tmp_path: Path, upstream: FakeOpenAI, fake_anthropic: FakeAnthropic, gateways: Gateways) -> GatewayServer:
    settings = make_settings(
        tmp_path,
        upstream.base_url,
        providers=[openai_provider("upstream", upstream.base_url), anthropic_provider("claude", fake_anthropic.base_url)],
        models=[
            {"id": "gpt-test", "provider": "upstream", "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
            {"id": "claude-test", "provider": "claude", "upstream_model": "claude-haiku-4-5", "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        ],
        organisations=[{"id": "acme", "monthly_budget_usd": 100.0}],
    )
    return gateways.start(settings)


def _rows(server: GatewayServer, key: str) -> JSON:
    server.flush_usage()
    response = httpx.get(f"{server.base_url}/usage", headers={"Authorization": f"Bearer {key}"}, timeout=20)
    assert response.status_code == 200, response.text
    return response.json()


def _assert_billed_sanely(server: GatewayServer, key: str, requests: int) -> None:
    usage = _rows(server, key)
    assert usage["total_requests"] == requests
    for row in usage["breakdown_by_model"]:
        assert 0 <= row["prompt_tokens"] < 2**53 and 0 <= row["completion_tokens"] < 2**53
        assert row["tokens"] == row["prompt_tokens"] + row["completion_tokens"]
        assert 0 <= row["cost_usd"] < 1
    # Nothing was credited: spend is not negative, so the budget left is at most the budget.
    assert 0 <= usage["total_cost_usd"] and usage["credit_remaining_usd"] <= 100.0


def _assert_sane(usage: Any) -> None:
    prompt, completion, total = usage.prompt_tokens, usage.completion_tokens, usage.total_tokens
    assert 0 <= prompt < 2**53 and 0 <= completion < 2**53 and total == prompt + completion


@pytest.mark.parametrize("bad", BAD_USAGE.values(), ids=BAD_USAGE.keys())
def test_chat_completions_bill_plugways_own_count_for_invalid_upstream_usage(
    server: GatewayServer, upstream: FakeOpenAI, bad: JSON
) -> None:
    key = server.mint("acme", daily_tokens=1_000_000)
    client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=20)
    upstream.responder = lambda body: Reply(text="The answer is forty-two.", usage=bad)
    messages: Any = [{"role": "user", "content": "What is six times seven? " * 10}]
    answer = client.chat.completions.create(model="gpt-test", messages=messages)
    assert answer.choices[0].message.content == "The answer is forty-two."
    _assert_sane(answer.usage)
    assert answer.usage is not None and answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0

    chunks = list(client.chat.completions.create(model="gpt-test", messages=messages, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "The answer is forty-two."
    assert chunks[-1].usage is not None
    _assert_sane(chunks[-1].usage)

    response = client.responses.create(model="gpt-test", input="What is six times seven?")
    assert response.output_text == "The answer is forty-two."
    assert response.usage is not None and response.usage.input_tokens >= 0 and response.usage.output_tokens >= 0

    with client.responses.stream(model="gpt-test", input="What is six times seven?") as events:
        final = events.get_final_response()
    assert final.output_text == "The answer is forty-two."

    messages_client = anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0, timeout=20)
    message = messages_client.messages.create(model="gpt-test", max_tokens=100, messages=[{"role": "user", "content": "Six times seven?"}])
    assert message.usage.input_tokens >= 0 and message.usage.output_tokens >= 0
    _assert_billed_sanely(server, key, requests=5)


def test_an_inconsistent_total_is_replaced_by_the_sum(server: GatewayServer, upstream: FakeOpenAI) -> None:
    key = server.mint("acme")
    client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=20)
    upstream.responder = lambda body: Reply(text="ok", usage={"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 999_999})
    answer = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens) == (10, 5, 15)
    assert _rows(server, key)["total_tokens"] == 15


@pytest.mark.parametrize("bad", BAD_ANTHROPIC_USAGE.values(), ids=BAD_ANTHROPIC_USAGE.keys())
def test_messages_bill_plugways_own_count_for_invalid_anthropic_usage(
    server: GatewayServer, fake_anthropic: FakeAnthropic, bad: JSON
) -> None:
    key = server.mint("acme", daily_tokens=1_000_000)
    fake_anthropic.responder = lambda body: anthropic_server.Reply(text="Forty-two.", usage=bad)
    client = anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0, timeout=20)
    ask: Any = [{"role": "user", "content": "Six times seven?"}]
    message = client.messages.create(model="claude-test", max_tokens=100, messages=ask)
    assert message.content[0].type == "text" and message.content[0].text == "Forty-two."
    with client.messages.stream(model="claude-test", max_tokens=100, messages=ask) as stream:
        streamed = stream.get_final_message()
    assert streamed.content[0].type == "text" and streamed.content[0].text == "Forty-two."
    chat = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=20)
    answer = chat.chat.completions.create(model="claude-test", messages=ask)
    _assert_sane(answer.usage)
    chunks = list(chat.chat.completions.create(model="claude-test", messages=ask, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None
    _assert_sane(chunks[-1].usage)
    _assert_billed_sanely(server, key, requests=4)
