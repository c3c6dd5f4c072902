"""Obfuscated personal data and denylisted terms are found as a model reads them (zero-width
characters, soft hyphens, full-width forms, confusable letters, real-world separators), and
redaction replaces exactly the original characters: on input, on streamed output and on
tool results."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from runtime.guardrails.normalise import normalise
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.guardrails.support import guardrails, streamed
from tests.support import Gateways, GatewayServer

PII = {"key": "pii", "kind": "pii", "action": "redact"}
WORDS = {"key": "words", "kind": "denylist", "action": "redact", "terms": ["project falcon", "secret"]}

# (what arrives, what leaves): every obfuscation a model reads through, per category.
OBFUSCATED: list[tuple[str, str]] = [
    ("mail j\u200bohn@exam\u200bple.com now", "mail [EMAIL] now"),
    ("mail john\uff20example.com now", "mail [EMAIL] now"),
    ("card 4111\u200b1111\u200b1111\u200b1111 ok", "card [CREDIT_CARD] ok"),
    ("card \uff14\uff11\uff11\uff11 \uff11\uff11\uff11\uff11 \uff11\uff11\uff11\uff11 \uff11\uff11\uff11\uff11 ok", "card [CREDIT_CARD] ok"),
    ("card 4111.1111.1111.1111 ok", "card [CREDIT_CARD] ok"),
    ("call +1 415\u200b555 2671 now", "call [PHONE] now"),
    ("call \uff0b\uff14\uff14 \uff12\uff10 \uff17\uff19\uff14\uff16 \uff10\uff19\uff15\uff18 now", "call [PHONE] now"),
    ("key sk-proj-abc123def456\u200bghi789jkl012mno end", "key [SECRET] end"),
    ("key AKIA\u2060IOSFODNN7EXAMPLE end", "key [SECRET] end"),
    ("iban de89 3704 0044 0532 0130 00 end", "iban [IBAN] end"),
    ("iban DE89-3704-0044-0532-0130-00 end", "iban [IBAN] end"),
    ("the s\u0435cret plan", "the [REDACTED] plan"),
    ("about pro\u00adject falcon today", "about [REDACTED] today"),
    ("\uff53\uff45\uff43\uff52\uff45\uff54 stuff", "[REDACTED] stuff"),
    ("the \u0455\u0435\u0441r\u0435t, PROJECT\u00a0FALCON", "the [REDACTED], [REDACTED]"),
    # Invisible characters outside a match are not part of it: they stay where they were.
    ("\u200bhi\u200b mail a@example.com\u200b, caf\u0065\u0301", "\u200bhi\u200b mail [EMAIL]\u200b, caf\u0065\u0301"),
]


@pytest.mark.parametrize(("text", "expected"), OBFUSCATED)
def test_obfuscated_text_is_redacted_exactly(text: str, expected: str) -> None:
    assert guardrails(PII, WORDS).check_text(text, "input").text == expected


@pytest.mark.parametrize(("text", "expected"), OBFUSCATED)
def test_streamed_obfuscated_text_is_redacted_whatever_the_split(text: str, expected: str) -> None:
    g = guardrails(PII, WORDS)
    for split in range(1, len(text)):
        assert streamed(g, [text[:split], text[split:]])[0] == expected, split
    whole, pieces = streamed(g, list(text))
    assert whole == expected
    assert not any("4111" in piece or "@exam" in piece for piece in pieces)


def test_the_normalised_view_maps_back_to_the_original_characters() -> None:
    view = normalise("a\u200bb\uff43\u0435")
    assert view.text == "abce"
    assert [view.span(i, i + 1) for i in range(4)] == [(0, 1), (2, 3), (3, 4), (4, 5)]
    assert view.original_offset(1) == 2 and view.view_offset(2) == 1


def test_plain_text_is_unchanged_and_still_matched() -> None:
    g = guardrails(PII, WORDS)
    assert g.check_text("Pay 4111 1111 1111 1111, it is no secret", "input").text == "Pay [CREDIT_CARD], it is no [REDACTED]"
    assert g.check_text("Version 1.2.3 costs 12.50 on 2024.01.31", "input").text == "Version 1.2.3 costs 12.50 on 2024.01.31"


# -- through the gateway: input, streamed output, tool results ----------------------------------------

ORGS: list[dict[str, Any]] = [
    {"id": "redactor", "plugins": [{"id": "testkit"}], "guardrails": [PII, WORDS], "guardrails_default": ["pii", "words"]},
]
SENT = " | ".join(text for text, _ in OBFUSCATED)
EXPECTED = " | ".join(expected for _, expected in OBFUSCATED)
NO_TOOLS = [{"type": "function", "function": {"name": "x"}}]  # client tools: no orchestration


@pytest.fixture
def server(gateways: Gateways) -> GatewayServer:
    return gateways.start(extra_orgs=ORGS)


def sdk(server: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=server.mint("redactor"), max_retries=0)


def test_obfuscated_input_is_redacted_before_the_model_sees_it(server: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="Noted."))
    sdk(server).chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": SENT}], tools=NO_TOOLS)  # type: ignore[list-item]
    assert upstream.requests[0]["messages"][0]["content"] == EXPECTED


def test_obfuscated_streamed_output_is_redacted(server: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text=SENT))
    chunks = list(sdk(server).chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}], stream=True, tools=NO_TOOLS))  # type: ignore[list-item]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == EXPECTED


def test_obfuscated_tool_results_are_redacted_before_the_model_reads_them(server: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("testkit__echo", {"text": SENT})]), Reply(text="done"))
    sdk(server).chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "echo"}])
    tool_message = upstream.requests[1]["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["content"] == EXPECTED
