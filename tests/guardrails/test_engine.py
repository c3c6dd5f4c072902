"""Actions, stages, several guardrails in order, and OpenAI chat messages."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from runtime.guardrails import BLOCKED_MESSAGE, Finding, GuardrailBlocked
from tests.guardrails.support import guardrails, pii

CARD = "4111 1111 1111 1111"
EMAIL = "bob@example.com"
TEXT = f"card {CARD}, mail {EMAIL}, card again 5555 5555 5555 4444"


def test_redact_replaces_each_match_with_its_placeholder() -> None:
    checked = guardrails(pii("redact")).check_text(TEXT, "input")
    assert checked.text == "card [CREDIT_CARD], mail [EMAIL], card again [CREDIT_CARD]"
    assert checked.blocked is None
    assert sorted(f.category for f in checked.findings) == ["credit_card", "credit_card", "email"]
    assert {f.action for f in checked.findings} == {"redact"}


def test_log_changes_nothing_and_reports_every_finding() -> None:
    checked = guardrails(pii("log")).check_text(TEXT, "input")
    assert checked.text == TEXT
    assert checked.blocked is None
    assert sorted(f.category for f in checked.findings) == ["credit_card", "credit_card", "email"]


def test_block_scans_the_whole_text_and_lists_every_finding() -> None:
    checked = guardrails(pii("block")).check_text(TEXT, "input")
    blocked = checked.blocked
    assert isinstance(blocked, GuardrailBlocked)
    assert str(blocked) == BLOCKED_MESSAGE == "Content blocked by guardrail"
    assert (blocked.guardrail_key, blocked.action) == ("pii", "block")
    assert sorted(f.category for f in blocked.findings) == ["credit_card", "credit_card", "email"]


def test_findings_never_echo_the_matched_text() -> None:
    secret = "sk-proj-abc123DEF456ghi789JKL012mno"
    text = f"{TEXT} key {secret} phone +44 20 7946 0958 iban DE89 3704 0044 0532 0130 00 falcon"
    g = guardrails(
        pii("log"), {"key": "w", "kind": "denylist", "action": "log", "terms": ["falcon"]}
    )
    findings = g.check_text(text, "input").findings
    assert len(findings) == 7
    for finding in findings:
        for fragment in (CARD, "4111", EMAIL, "bob", secret, "abc123", "7946", "DE89", "falcon"):
            assert fragment not in finding.message


def test_apply_to_chooses_the_stages() -> None:
    g = guardrails(pii("redact", apply_to=["output"]))
    assert g.applies_to("output") and not g.applies_to("input") and not g.applies_to("tool_results")
    assert g.check_text(TEXT, "input").text == TEXT
    assert g.check_text(TEXT, "output").text != TEXT
    with pytest.raises(ValueError, match="unknown guardrail stage"):
        g.check_text(TEXT, "prompt")  # type: ignore[arg-type]


def test_several_guardrails_apply_in_order() -> None:
    redact_then_block = guardrails(
        pii("redact", categories=["email"]),
        {"key": "words", "kind": "denylist", "action": "block", "terms": ["example"]},
    )
    # The email is gone before the denylist looks: "example" inside it no longer blocks.
    assert redact_then_block.check_text(f"to {EMAIL}", "input").blocked is None
    blocked = redact_then_block.check_text(f"to {EMAIL}, for example", "input").blocked
    assert blocked is not None and blocked.guardrail_key == "words"

    log_then_redact = guardrails(
        {"key": "audit", "kind": "denylist", "action": "log", "terms": ["card"]}, pii("redact")
    )
    checked = log_then_redact.check_text(TEXT, "input")
    assert checked.text == "card [CREDIT_CARD], mail [EMAIL], card again [CREDIT_CARD]"
    assert [f.guardrail_key for f in checked.findings] == ["audit", "audit", "pii", "pii", "pii"]


def test_a_block_stops_the_guardrails_after_it() -> None:
    g = guardrails(
        {"key": "first", "kind": "denylist", "action": "block", "terms": ["card"]}, pii("log")
    )
    checked = g.check_text(TEXT, "input")
    assert checked.blocked is not None and checked.blocked.guardrail_key == "first"
    assert {f.guardrail_key for f in checked.findings} == {"first"}


def _messages() -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": f"Support for {EMAIL}"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": f"my card is {CARD}"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,4111111111111111"},
                },
                {"type": "text", "text": "thanks"},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": f"customer email {EMAIL}"},
        {
            "role": "tool",
            "tool_call_id": "c2",
            "content": [{"type": "text", "text": f"card {CARD}"}],
        },
        {"role": "assistant", "content": f"I wrote to {EMAIL}"},
    ]


def test_check_messages_on_input_reads_every_text_except_tool_results() -> None:
    messages = _messages()
    before = copy.deepcopy(messages)
    checked, findings = guardrails(pii("redact")).check_messages(messages, "input")
    assert messages == before  # never changed in place
    assert checked[0]["content"] == "Support for [EMAIL]"
    assert checked[1]["content"][0] == {"type": "text", "text": "my card is [CREDIT_CARD]"}
    assert checked[1]["content"][1] == messages[1]["content"][1]  # an image part is not text
    assert checked[1]["content"][2] == {"type": "text", "text": "thanks"}
    assert checked[2] is messages[2]
    assert checked[3] == messages[3] and checked[4] == messages[4]  # tool results: another stage
    assert checked[5]["content"] == "I wrote to [EMAIL]"
    assert [f.category for f in findings] == ["email", "credit_card", "email"]


def test_check_messages_on_tool_results_reads_only_tool_messages() -> None:
    checked, findings = guardrails(pii("redact")).check_messages(_messages(), "tool_results")
    assert checked[3]["content"] == "customer email [EMAIL]"
    assert checked[4]["content"] == [{"type": "text", "text": "card [CREDIT_CARD]"}]
    assert checked[0]["content"] == f"Support for {EMAIL}"
    assert [f.category for f in findings] == ["email", "credit_card"]


def test_check_messages_on_output_reads_assistant_messages() -> None:
    checked, _ = guardrails(pii("redact")).check_messages(_messages(), "output")
    assert checked[5]["content"] == "I wrote to [EMAIL]"
    assert checked[1] == _messages()[1]


def test_check_messages_raises_on_a_block() -> None:
    with pytest.raises(GuardrailBlocked) as caught:
        guardrails(pii("block")).check_messages(_messages(), "input")
    assert caught.value.findings == [Finding("pii", "email", "block", "email address")]


def test_check_messages_skips_stages_the_guardrails_do_not_apply_to() -> None:
    messages = _messages()
    checked, findings = guardrails(pii("block", apply_to=["output"])).check_messages(
        messages, "input"
    )
    assert checked == messages and findings == []
