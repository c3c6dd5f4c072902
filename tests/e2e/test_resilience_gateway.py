"""Retries, fallbacks and the circuit breaker, seen from the official OpenAI SDK through the gateway.

Upstreams are the fake OpenAI and fake Anthropic servers, failing on script;
each test starts its own gateway so that breaker state never leaks between tests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from runtime.json_types import JSON
from tests.e2e.conftest import Launch, anthropic_provider, openai_provider, sdk_client
from tests.fakes.anthropic_server import (
    Fail,
    FakeAnthropic,
    Hangup,
    Reply,
    StreamFail,
    closed_port_url,
)
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.openai_server import Reply as OpenAIReply
from tests.support import GatewayServer

HELLO: list[Any] = [{"role": "user", "content": "hello"}]


def trace_of(response: Any) -> JSON:
    trace: JSON = (response.model_extra or {})["plugway"]
    return trace


def openai_with_claude_fallback(upstream_url: str, fake: FakeAnthropic, **primary: Any) -> JSON:
    """Settings: model "primary" on an OpenAI-style provider, falling back to "claude-backup"."""
    return {
        "providers": [
            openai_provider("primary", upstream_url, **primary),
            anthropic_provider("claude", fake.base_url),
        ],
        "models": [
            {
                "id": "primary",
                "provider": "primary",
                "upstream_model": "gpt-4o-mini",
                "fallbacks": ["claude-backup"],
            },
            {"id": "claude-backup", "provider": "claude", "upstream_model": "claude-haiku-4-5"},
        ],
    }


def collect(stream: Any) -> tuple[str, list[Any]]:
    chunks = list(stream)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


# ---------------------------------------------------------------------------
# retries
# ---------------------------------------------------------------------------


def test_server_error_then_success_is_retried(launch: Launch, upstream: FakeOpenAI) -> None:
    server = launch(
        providers=[openai_provider("upstream", upstream.base_url, max_retries=2)],
        models=[{"id": "gpt-test", "provider": "upstream", "upstream_model": "gpt-4o-mini"}],
    )
    upstream.enqueue(
        OpenAIReply(status=500, error_message="boom"), OpenAIReply(text="second time lucky")
    )

    response = sdk_client(server).chat.completions.create(model="gpt-test", messages=HELLO)

    assert response.choices[0].message.content == "second time lucky"
    assert len(upstream.requests) == 2
    trace = trace_of(response)
    assert trace["provider"] == "upstream" and trace["served_model"] == "gpt-test"
    [failed] = trace["failed_attempts"]
    assert failed["provider"] == "upstream" and failed["model"] == "gpt-test"
    assert "500" in failed["error"]


def test_overloaded_retry_after_is_honoured(launch: Launch, fake_anthropic: FakeAnthropic) -> None:
    server = launch(
        providers=[anthropic_provider("claude", fake_anthropic.base_url, max_retries=2)],
        models=[{"id": "claude-test", "provider": "claude", "upstream_model": "claude-haiku-4-5"}],
    )
    fake_anthropic.script([Fail(529, retry_after=0.6), Reply(text="no longer overloaded")])
    client = sdk_client(server)

    started = time.monotonic()
    response = client.chat.completions.create(model="claude-test", messages=HELLO)
    elapsed = time.monotonic() - started

    assert response.choices[0].message.content == "no longer overloaded"
    assert elapsed >= 0.6
    first, second = fake_anthropic.requests
    assert second.received_at - first.received_at >= 0.6
    [failed] = trace_of(response)["failed_attempts"]
    assert "529" in failed["error"] and "overloaded" in failed["error"]
    assert failed["retry_in_s"] >= 0.6


def test_retry_after_beyond_the_cap_fails_over_at_once(
    launch: Launch, upstream: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    server = launch(
        providers=[
            anthropic_provider("claude", fake_anthropic.base_url, max_retries=3),
            openai_provider("backup", upstream.base_url),
        ],
        models=[
            {
                "id": "claude-test",
                "provider": "claude",
                "upstream_model": "claude-haiku-4-5",
                "fallbacks": ["gpt-backup"],
            },
            {"id": "gpt-backup", "provider": "backup", "upstream_model": "gpt-4o-mini"},
        ],
    )
    # Waiting 30 s would hold the client far longer than failing over does.
    fake_anthropic.script([Fail(529, retry_after=30)])
    upstream.enqueue(OpenAIReply(text="backup answered"))

    started = time.monotonic()
    response = sdk_client(server).chat.completions.create(model="claude-test", messages=HELLO)

    assert time.monotonic() - started < 3
    assert response.choices[0].message.content == "backup answered"
    assert trace_of(response)["served_model"] == "gpt-backup"
    assert len(fake_anthropic.requests) == 1


def test_retries_exhausted_is_502(launch: Launch, upstream: FakeOpenAI) -> None:
    server = launch(
        providers=[openai_provider("upstream", upstream.base_url, max_retries=2)],
        models=[{"id": "gpt-test", "provider": "upstream"}],
    )
    upstream.enqueue(
        *[OpenAIReply(status=503, error_message="unavailable") for _ in range(3)],
        OpenAIReply(text="too late"),
    )

    with pytest.raises(openai.InternalServerError) as caught:
        sdk_client(server).chat.completions.create(model="gpt-test", messages=HELLO)

    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_unavailable"
    assert "503" in caught.value.message
    # One attempt plus max_retries=2, and no more.
    assert len(upstream.requests) == 3
    assert len(upstream.script) == 1


def test_upstream_request_error_is_400_and_not_retried(
    launch: Launch, upstream: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    server = launch(**openai_with_claude_fallback(upstream.base_url, fake_anthropic, max_retries=2))
    upstream.enqueue(OpenAIReply(status=400, error_message="context_length_exceeded"))

    with pytest.raises(openai.BadRequestError) as caught:
        sdk_client(server).chat.completions.create(model="primary", messages=HELLO)

    assert "context_length_exceeded" in caught.value.message
    assert len(upstream.requests) == 1
    # A request every provider would refuse is not sent to the fallback either.
    assert fake_anthropic.requests == []


# ---------------------------------------------------------------------------
# fallbacks
# ---------------------------------------------------------------------------


def test_closed_port_primary_falls_back(launch: Launch, fake_anthropic: FakeAnthropic) -> None:
    server = launch(
        **openai_with_claude_fallback(closed_port_url() + "/v1", fake_anthropic, max_retries=1)
    )
    fake_anthropic.script([Reply(text="served by Claude")])

    response = sdk_client(server).chat.completions.create(model="primary", messages=HELLO)

    assert response.choices[0].message.content == "served by Claude"
    assert response.model == "primary"
    trace = trace_of(response)
    assert trace["provider"] == "claude"
    assert trace["served_model"] == "claude-backup"
    # One retry of the primary, then its final failure, both recorded.
    assert [(a["provider"], a["model"]) for a in trace["failed_attempts"]] == [
        ("primary", "primary")
    ] * 2
    assert all("unreachable" in a["error"] for a in trace["failed_attempts"])
    [sent] = fake_anthropic.requests
    assert sent.body["model"] == "claude-haiku-4-5"


def test_slow_primary_times_out_and_falls_back(
    launch: Launch, upstream: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    server = launch(**openai_with_claude_fallback(upstream.base_url, fake_anthropic, timeout_s=0.3))
    upstream.enqueue(OpenAIReply(text="too slow", delay_s=2.0))
    fake_anthropic.script([Reply(text="fast fallback")])

    started = time.monotonic()
    response = sdk_client(server).chat.completions.create(model="primary", messages=HELLO)
    elapsed = time.monotonic() - started

    assert response.choices[0].message.content == "fast fallback"
    assert 0.3 <= elapsed < 1.5
    trace = trace_of(response)
    assert trace["provider"] == "claude" and trace["served_model"] == "claude-backup"
    [failed] = trace["failed_attempts"]
    assert failed["provider"] == "primary" and "timed out" in failed["error"]
    assert len(upstream.requests) == 1


def test_all_candidates_failing_is_502(
    launch: Launch, upstream: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    server = launch(**openai_with_claude_fallback(upstream.base_url, fake_anthropic))
    upstream.enqueue(OpenAIReply(status=500))
    fake_anthropic.script([Fail(529)])

    with pytest.raises(openai.InternalServerError) as caught:
        sdk_client(server).chat.completions.create(model="primary", messages=HELLO)

    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_unavailable"
    # The message names the last failure: the fallback's.
    assert "overloaded" in caught.value.message
    assert len(upstream.requests) == 1 and len(fake_anthropic.requests) == 1


def test_orchestration_fails_over_mid_loop_to_another_provider(
    launch: Launch, upstream: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    server = launch(
        **openai_with_claude_fallback(upstream.base_url, fake_anthropic, breaker_failures=10),
        organisations=[{"id": "acme", "plugins": [{"id": "calculator"}]}],
    )
    # Round 1 on OpenAI asks for a tool; round 2 fails there and Claude gets an OpenAI-minted history.
    upstream.enqueue(
        OpenAIReply(tool_calls=[("calculator__evaluate", {"expression": "19*3"})]),
        OpenAIReply(status=500),
    )
    fake_anthropic.script([Reply(text="19*3 = 57")])

    response = sdk_client(server, "acme").chat.completions.create(
        model="primary", messages=[{"role": "user", "content": "19*3?"}]
    )

    assert response.choices[0].message.content == "19*3 = 57"
    trace = trace_of(response)
    assert trace["rounds"] == 2
    assert trace["provider"] == "claude" and trace["served_model"] == "claude-backup"
    assert [t["name"] for t in trace["tool_calls"]] == ["calculator__evaluate"]
    assert len(trace["failed_attempts"]) == 1
    call_id = upstream.requests[1]["messages"][1]["tool_calls"][0]["id"]
    [sent] = fake_anthropic.requests
    assistant, result = sent.body["messages"][1], sent.body["messages"][2]
    assert assistant["content"][0]["type"] == "tool_use"
    assert assistant["content"][0]["id"] == result["content"][0]["tool_use_id"] == call_id
    assert "57" in str(result["content"][0]["content"])


# ---------------------------------------------------------------------------
# circuit breaker
# ---------------------------------------------------------------------------


def test_circuit_breaker_skips_failing_primary_then_retries_after_cooldown(
    launch: Launch, upstream: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    cooldown = 0.8
    server = launch(
        **openai_with_claude_fallback(
            upstream.base_url, fake_anthropic, breaker_failures=2, breaker_cooldown_s=cooldown
        )
    )
    upstream.enqueue(OpenAIReply(status=500), OpenAIReply(status=500))
    client = sdk_client(server)

    for _ in range(2):
        response = client.chat.completions.create(model="primary", messages=HELLO)
        assert trace_of(response)["provider"] == "claude"
    assert len(upstream.requests) == 2

    # Open: the primary is not called at all, the fallback answers.
    response = client.chat.completions.create(model="primary", messages=HELLO)
    trace = trace_of(response)
    assert trace["provider"] == "claude"
    assert len(upstream.requests) == 2
    [skipped] = trace["failed_attempts"]
    assert skipped["provider"] == "primary" and "circuit breaker open" in skipped["error"]
    assert len(fake_anthropic.requests) == 3

    # After the cooldown one trial call goes to the primary; it succeeds and closes the breaker.
    time.sleep(cooldown + 0.1)
    upstream.enqueue(OpenAIReply(text="primary is back"), OpenAIReply(text="and stays"))
    response = client.chat.completions.create(model="primary", messages=HELLO)
    assert response.choices[0].message.content == "primary is back"
    assert trace_of(response)["provider"] == "primary"
    assert "failed_attempts" not in trace_of(response)
    response = client.chat.completions.create(model="primary", messages=HELLO)
    assert response.choices[0].message.content == "and stays"
    assert len(upstream.requests) == 4
    assert len(fake_anthropic.requests) == 3


def test_circuit_breaker_reopens_when_trial_fails(
    launch: Launch, upstream: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    cooldown = 0.5
    server = launch(
        **openai_with_claude_fallback(
            upstream.base_url, fake_anthropic, breaker_failures=1, breaker_cooldown_s=cooldown
        )
    )
    upstream.enqueue(OpenAIReply(status=500), OpenAIReply(status=502))
    client = sdk_client(server)

    client.chat.completions.create(model="primary", messages=HELLO)
    client.chat.completions.create(model="primary", messages=HELLO)
    assert len(upstream.requests) == 1

    time.sleep(cooldown + 0.1)
    response = client.chat.completions.create(model="primary", messages=HELLO)  # the trial, failing
    assert trace_of(response)["provider"] == "claude"
    assert len(upstream.requests) == 2
    response = client.chat.completions.create(model="primary", messages=HELLO)  # open again at once
    assert "circuit breaker open" in trace_of(response)["failed_attempts"][0]["error"]
    assert len(upstream.requests) == 2


# ---------------------------------------------------------------------------
# streaming
# ---------------------------------------------------------------------------


def assert_one_clean_stream(chunks: list[Any], model: str) -> None:
    roles = [c.choices[0].delta.role for c in chunks if c.choices and c.choices[0].delta.role]
    assert roles == ["assistant"]
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    assert len({c.id for c in chunks}) == 1
    assert all(c.model == model for c in chunks)
    # No include_usage asked: usage rides on the finish chunk, so choices[0] always exists.
    assert chunks[-1].usage is not None and chunks[-1].choices[0].finish_reason == "stop"


def test_stream_error_before_first_chunk_is_retried(
    launch: Launch, fake_anthropic: FakeAnthropic
) -> None:
    server = launch(
        providers=[anthropic_provider("claude", fake_anthropic.base_url, max_retries=2)],
        models=[{"id": "claude-test", "provider": "claude", "upstream_model": "claude-haiku-4-5"}],
    )
    # An overloaded `error` event right after message_start, then a dropped connection, then a real answer.
    fake_anthropic.script(
        [StreamFail(), Hangup(), Reply(text="one clean answer after two failures")]
    )

    text, chunks = collect(
        sdk_client(server).chat.completions.create(model="claude-test", messages=HELLO, stream=True)
    )

    assert text == "one clean answer after two failures"
    assert_one_clean_stream(chunks, "claude-test")
    assert len(fake_anthropic.requests) == 3


def test_stream_fails_over_before_first_chunk(
    launch: Launch, upstream: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    server = launch(**openai_with_claude_fallback(upstream.base_url, fake_anthropic))
    upstream.enqueue(OpenAIReply(status=500))
    fake_anthropic.script([Reply(text="streamed by the fallback")])

    text, chunks = collect(
        sdk_client(server).chat.completions.create(model="primary", messages=HELLO, stream=True)
    )

    assert text == "streamed by the fallback"
    assert_one_clean_stream(chunks, "primary")
    assert len(upstream.requests) == 1
    assert upstream.requests[0]["stream"] is True
    assert fake_anthropic.requests[0].body["stream"] is True


def test_orchestrated_stream_fails_over_cleanly(
    launch: Launch, upstream: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    server = launch(
        **openai_with_claude_fallback(upstream.base_url, fake_anthropic, breaker_failures=10),
        organisations=[{"id": "acme", "plugins": [{"id": "calculator"}]}],
    )
    upstream.enqueue(OpenAIReply(status=503), OpenAIReply(status=503))
    fake_anthropic.script(
        [
            Reply(tool_use=[("calculator__evaluate", {"expression": "2**10"})]),
            Reply(text="It is 1024."),
        ]
    )

    text, chunks = collect(
        sdk_client(server, "acme").chat.completions.create(
            model="primary", messages=[{"role": "user", "content": "2**10?"}], stream=True
        )
    )

    assert text == "It is 1024."
    assert_one_clean_stream(chunks, "primary")
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    trace = (chunks[-1].model_extra or {})["plugway"]
    assert trace["provider"] == "claude" and trace["rounds"] == 2
    assert [a["provider"] for a in trace["failed_attempts"]] == ["primary", "primary"]
    assert len(upstream.requests) == 2 and len(fake_anthropic.requests) == 2


def test_stream_that_cannot_open_is_502(
    launch: Launch, upstream: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    server = launch(**openai_with_claude_fallback(upstream.base_url, fake_anthropic))
    upstream.enqueue(OpenAIReply(status=500))
    fake_anthropic.script([StreamFail()])

    with pytest.raises(openai.InternalServerError) as caught:
        list(
            sdk_client(server).chat.completions.create(model="primary", messages=HELLO, stream=True)
        )

    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_unavailable"


def test_stream_failure_after_first_chunk_is_not_retried(
    launch: Launch, fake_anthropic: FakeAnthropic
) -> None:
    server = launch(
        providers=[anthropic_provider("claude", fake_anthropic.base_url, max_retries=2)],
        models=[{"id": "claude-test", "provider": "claude", "upstream_model": "claude-haiku-4-5"}],
    )
    fake_anthropic.script([StreamFail(after_text="partial "), Reply(text="must not be used")])
    received: list[str] = []

    with pytest.raises(openai.APIError) as caught:
        for chunk in sdk_client(server).chat.completions.create(
            model="claude-test", messages=HELLO, stream=True
        ):
            if chunk.choices:
                received.append(chunk.choices[0].delta.content or "")

    # Bytes reached the client: no retry, no failover, an error in the stream instead of a spliced answer.
    assert "".join(received) == "partial "
    assert "overloaded_error" in caught.value.message
    assert len(fake_anthropic.requests) == 1
    assert fake_anthropic.remaining_steps == 1


def test_anthropic_hangup_after_first_chunk_surfaces_as_stream_error(
    launch: Launch, fake_anthropic: FakeAnthropic
) -> None:
    server = launch(
        providers=[anthropic_provider("claude", fake_anthropic.base_url, max_retries=2)],
        models=[{"id": "claude-test", "provider": "claude", "upstream_model": "claude-haiku-4-5"}],
    )
    fake_anthropic.script([Hangup(after_text="cut short "), Reply(text="must not be used")])
    received: list[str] = []

    with pytest.raises(openai.APIError) as caught:
        for chunk in sdk_client(server).chat.completions.create(
            model="claude-test", messages=HELLO, stream=True
        ):
            if chunk.choices:
                received.append(chunk.choices[0].delta.content or "")

    assert "".join(received) == "cut short "
    assert "message_stop" in caught.value.message
    assert len(fake_anthropic.requests) == 1


def test_openai_stream_truncated_after_first_chunk_surfaces_as_stream_error(
    launch: Launch, upstream: FakeOpenAI
) -> None:
    server = launch(
        providers=[openai_provider("upstream", upstream.base_url, max_retries=2)],
        models=[{"id": "gpt-test", "provider": "upstream"}],
    )
    # The upstream stops after two content chunks: no finish_reason, no usage, no [DONE].
    upstream.enqueue(OpenAIReply(text="one two three four", cut_after_chunks=2))
    received: list[str] = []

    with pytest.raises(openai.APIError):
        for chunk in sdk_client(server).chat.completions.create(
            model="gpt-test", messages=HELLO, stream=True
        ):
            if chunk.choices:
                received.append(chunk.choices[0].delta.content or "")

    assert "".join(received) == "one two "
    assert len(upstream.requests) == 1


def test_open_breaker_sends_streams_straight_to_the_fallback(
    launch: Launch, upstream: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    server = launch(
        **openai_with_claude_fallback(
            upstream.base_url, fake_anthropic, breaker_failures=1, breaker_cooldown_s=30
        )
    )
    upstream.enqueue(OpenAIReply(status=500), OpenAIReply(text="primary must stay untouched"))
    fake_anthropic.script([Reply(text="first via fallback"), Reply(text="second via fallback")])
    client = sdk_client(server)

    first, _ = collect(client.chat.completions.create(model="primary", messages=HELLO, stream=True))
    second, chunks = collect(
        client.chat.completions.create(model="primary", messages=HELLO, stream=True)
    )

    assert (first, second) == ("first via fallback", "second via fallback")
    assert_one_clean_stream(chunks, "primary")
    assert len(upstream.requests) == 1
    assert len(fake_anthropic.requests) == 2


# -- a provider's 429 reaches the client only after the model's fallbacks were tried -------------------
# A fallback that answers serves the request; when every provider throttles, the client gets the
# shortest Retry-After; throttling mixed with another failure is 502 upstream_unavailable.
# Throttling never opens a breaker, so the next request still goes to the primary.


@pytest.fixture
def backup() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
def fallback_gateway(launch: Launch, upstream: FakeOpenAI, backup: FakeOpenAI) -> GatewayServer:
    """``gpt-test`` on the primary upstream, falling back to ``gpt-backup`` on a second upstream.

    The primary's breaker opens after a single counted failure: if throttling counted, one
    429 would be enough to stop the primary being tried.
    """
    return launch(
        providers=[
            openai_provider("primary", upstream.base_url, breaker_failures=1, breaker_cooldown_s=600),
            openai_provider("backup", backup.base_url),
        ],
        models=[
            {"id": "gpt-test", "provider": "primary", "fallbacks": ["gpt-backup"]},
            {"id": "gpt-backup", "provider": "backup"},
        ],
    )


def _throttled(retry_after: str) -> OpenAIReply:
    return OpenAIReply(status=429, error_message="Rate limit reached for gpt-4o-mini", headers={"retry-after": retry_after})


def _primary_is_still_tried(client: openai.OpenAI, upstream: FakeOpenAI, backup: FakeOpenAI) -> None:
    """The primary's breaker stayed closed: the next request is sent to it, and it serves it."""
    before_primary, before_backup = len(upstream.requests), len(backup.requests)
    upstream.enqueue(OpenAIReply(text="from the primary"))
    reply = client.chat.completions.create(model="gpt-test", messages=HELLO)
    assert reply.choices[0].message.content == "from the primary"
    assert len(upstream.requests) == before_primary + 1
    assert len(backup.requests) == before_backup


def test_a_throttled_primary_falls_back_and_the_fallback_serves(
    fallback_gateway: GatewayServer, upstream: FakeOpenAI, backup: FakeOpenAI
) -> None:
    client = sdk_client(fallback_gateway)
    upstream.enqueue(_throttled("7"))
    backup.enqueue(OpenAIReply(text="from the backup"))
    reply = client.chat.completions.with_raw_response.create(model="gpt-test", messages=HELLO)
    assert reply.status_code == 200
    assert reply.parse().choices[0].message.content == "from the backup"
    assert [len(upstream.requests), len(backup.requests)] == [1, 1]
    _primary_is_still_tried(client, upstream, backup)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize(("primary_wait", "backup_wait"), [("7", "3"), ("3", "7")])
def test_when_every_provider_throttles_the_client_gets_429_with_the_shortest_retry_after(
    fallback_gateway: GatewayServer, upstream: FakeOpenAI, backup: FakeOpenAI, stream: bool, primary_wait: str, backup_wait: str
) -> None:
    # Both orders: the shortest wait wins, not the first or the last provider's.
    client = sdk_client(fallback_gateway)
    upstream.enqueue(_throttled(primary_wait))
    backup.enqueue(_throttled(backup_wait))
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-test", messages=HELLO, stream=stream)
    assert info.value.status_code == 429
    assert info.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    assert info.value.response.headers["retry-after"] == "3"
    # Both were tried, once each: the 429 came after the fallback, not instead of it.
    assert [len(upstream.requests), len(backup.requests)] == [1, 1]
    _primary_is_still_tried(client, upstream, backup)


def test_throttling_mixed_with_a_failing_fallback_is_502_upstream_unavailable(
    fallback_gateway: GatewayServer, upstream: FakeOpenAI, backup: FakeOpenAI
) -> None:
    client = sdk_client(fallback_gateway)
    upstream.enqueue(_throttled("7"))
    backup.enqueue(OpenAIReply(status=500, error_message="backup is down"))
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gpt-test", messages=HELLO)
    assert info.value.status_code == 502
    assert info.value.body["code"] == "upstream_unavailable"  # type: ignore[index]
    # It failed over already: the SDKs must not retry on top of that.
    assert info.value.response.headers["x-should-retry"] == "false"
    assert "retry-after" not in info.value.response.headers
    assert [len(upstream.requests), len(backup.requests)] == [1, 1]
    _primary_is_still_tried(client, upstream, backup)
