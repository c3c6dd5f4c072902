"""``plugway chat`` against an unreachable gateway and a turn that fails midway."""

from __future__ import annotations

from pathlib import Path

from tests.cli.runner import assert_clear_failure, plugway
from tests.fakes.openai_server import FakeOpenAI, Reply, free_port


def test_a_refused_connection_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    result = plugway("chat", "--key", "pw_" + "x" * 10, "--base-url", f"http://127.0.0.1:{port}/v1", cwd=tmp_path, input="hello\n")
    assert_clear_failure(result, f"cannot reach http://127.0.0.1:{port}/v1", "connection refused")


def test_a_refused_key_is_one_line(tmp_path: Path, upstream: FakeOpenAI) -> None:
    # The fake speaks OpenAI's wire format and wants its own key: any other is a 401.
    result = plugway("chat", "--key", "sk-wrong", "--base-url", upstream.base_url, cwd=tmp_path, input="hello\n")
    assert_clear_failure(result, upstream.base_url, "401", "Incorrect API key")


def test_a_failed_turn_is_not_kept_in_the_conversation(tmp_path: Path, upstream: FakeOpenAI) -> None:
    upstream.enqueue(
        Reply(text="the first half of an answer that never ends", cut_after_chunks=3),
        Reply(status=500, error_message="upstream exploded"),
        Reply(text="a whole answer"),
        Reply(text="and another"),
    )
    result = plugway(
        "chat", "--key", upstream.api_key, "--base-url", upstream.base_url, "--model", "gpt-test",
        cwd=tmp_path, input="first question\nsecond question\nthird question\nfourth question\n",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the first half" in result.stdout  # the user saw what arrived
    assert "upstream exploded" in result.stdout
    assert result.stdout.count("not kept") == 2
    sent = [request["messages"] for request in upstream.requests]
    assert sent[0] == [{"role": "user", "content": "first question"}]
    # The cut answer and the failed turn are gone: the model never sees half an answer as its own.
    assert sent[1] == [{"role": "user", "content": "second question"}]
    assert sent[2] == [{"role": "user", "content": "third question"}]
    assert sent[3] == [
        {"role": "user", "content": "third question"},
        {"role": "assistant", "content": "a whole answer"},
        {"role": "user", "content": "fourth question"},
    ]
