"""Issue 9.16: the usage chunk must not break the most common streaming loop.

``for chunk in stream: print(chunk.choices[0].delta.content)`` raised IndexError
after the whole answer when plugway sent its usage chunk with ``choices: []``
to a client that never asked for ``stream_options.include_usage``.
"""

from __future__ import annotations

import openai
import pytest

from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.support import GatewayServer

USER = [{"role": "user", "content": "hi"}]


def _replies(orchestrated: bool) -> list[Reply]:
    if orchestrated:
        return [Reply(tool_calls=[("calculator__evaluate", {"expression": "6*7"})], prompt_tokens=10, completion_tokens=3), Reply(text="forty two", prompt_tokens=20, completion_tokens=2)]
    return [Reply(text="forty two", prompt_tokens=20, completion_tokens=2)]


@pytest.mark.parametrize("org", ["acme", "bare"], ids=["orchestrated", "passthrough"])
def test_the_common_loop_never_meets_empty_choices(gateway: GatewayServer, upstream: FakeOpenAI, org: str) -> None:
    upstream.enqueue(*_replies(org == "acme"))
    client = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.mint(org), max_retries=0)
    text = ""
    chunks = list(client.chat.completions.create(model="gpt-test", messages=USER, stream=True))
    for chunk in chunks:
        text += chunk.choices[0].delta.content or ""  # the loop from every tutorial
    assert text == "forty two"
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    expected = 35 if org == "acme" else 22
    assert last.usage is not None and last.usage.total_tokens == expected
    assert sum(1 for c in chunks if c.usage is not None) == 1
    assert "plugway" in (last.model_extra or {})


@pytest.mark.parametrize("org", ["acme", "bare"], ids=["orchestrated", "passthrough"])
def test_include_usage_gets_openais_own_final_chunk(gateway: GatewayServer, upstream: FakeOpenAI, org: str) -> None:
    upstream.enqueue(*_replies(org == "acme"))
    client = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.mint(org), max_retries=0)
    chunks = list(client.chat.completions.create(model="gpt-test", messages=USER, stream=True, stream_options={"include_usage": True}))
    *body, last = chunks
    assert last.choices == [] and last.usage is not None
    assert last.usage.total_tokens == (35 if org == "acme" else 22)
    assert all(c.choices for c in body)
    assert [c.choices[0].finish_reason for c in body if c.choices[0].finish_reason] == ["stop"]
