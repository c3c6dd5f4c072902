"""Streamed redaction: every way of cutting the text gives the whole-text result, and nothing leaks early."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.guardrails import GuardrailBlocked, Guardrails
from tests.guardrails.support import guardrails, pii, streamed
from tests.guardrails.test_detectors import PEM, SECRETS

DENYLIST = {
    "key": "words",
    "kind": "denylist",
    "action": "redact",
    "terms": ["project falcon", "internal only"],
    "patterns": ["ACME-\\d{6}"],
}
ALL = guardrails(pii("redact"), DENYLIST)

# (text, the sensitive part that must never be sent)
SAMPLES: list[tuple[str, str]] = [
    ("my card is 4111 1111 1111 1111, thanks", "4111 1111 1111 1111"),
    ("card 4111111111111111 123 ok", "4111111111111111"),
    ("call 555 4111-1111-1111-1111 now", "4111-1111-1111-1111"),
    ("mail bob.smith+x@example.co.uk. bye", "bob.smith+x@example.co.uk"),
    ("call +44 20 7946 0958 or so", "+44 20 7946 0958"),
    ("office (415) 555-2671, ask", "(415) 555-2671"),
    ("IBAN DE89 3704 0044 0532 0130 00 IS MINE", "DE89 3704 0044 0532 0130 00"),
    ("pay GB82WEST12345698765432.", "GB82WEST12345698765432"),
    ("Authorization: Bearer abcdef1234567890XYZ ok", "abcdef1234567890XYZ"),
    (f"token {SECRETS['JSON Web Token']}. done", SECRETS["JSON Web Token"]),
    (f"key={SECRETS['Anthropic API key']}&x=1", SECRETS["Anthropic API key"]),
    (f"key {SECRETS['OpenAI API key']} ok", SECRETS["OpenAI API key"]),
    (f"id {SECRETS['AWS access key id']}!", SECRETS["AWS access key id"]),
    (f"here:\n{PEM}\nbye", PEM),
    ("We discussed Project  Falcon today", "Project  Falcon"),
    ("it is internal\nonly.", "internal\nonly"),
    ("code ACME-123456 ok", "ACME-123456"),
]


def _windows(secret: str, size: int = 6) -> set[str]:
    return {secret[index : index + size] for index in range(max(1, len(secret) - size + 1))}


def _check_split(g: Guardrails, chunks: list[str], expected: str, secret: str) -> None:
    redactor = g.stream_redactor("output")
    sent = ""
    for chunk in chunks:
        sent += redactor.feed(chunk)
        assert expected.startswith(sent), (chunks, sent)
        assert not any(window in sent for window in _windows(secret)), (chunks, sent)
    sent += redactor.finish()
    assert sent == expected, chunks


@pytest.mark.parametrize("text, secret", SAMPLES, ids=[sample[1][:20] for sample in SAMPLES])
def test_every_split_point_gives_the_whole_text_redaction(text: str, secret: str) -> None:
    expected = ALL.check_text(text, "output").text
    assert not any(
        window in expected for window in _windows(secret)
    )  # the sample does test something
    for cut in range(len(text) + 1):
        _check_split(ALL, [text[:cut], text[cut:]], expected, secret)
    _check_split(ALL, list(text), expected, secret)  # one character at a time


def test_the_brief_example() -> None:
    g = guardrails(pii("redact"))
    redactor = g.stream_redactor("output")
    assert redactor.feed("my card is 4111 11") == "my card is "  # the digits could become a card
    assert redactor.feed("11 1111 1111") == ""
    assert redactor.feed(" thanks") + redactor.finish() == "[CREDIT_CARD] thanks"
    assert [f.category for f in redactor.findings] == ["credit_card"]


def test_only_what_could_still_match_is_held_back() -> None:
    redactor = ALL.stream_redactor("output")
    assert redactor.feed("Hello, how are you today? ") == "Hello, how are you today? "
    assert redactor.held == 0
    # A trailing word could still grow into an email address or a denylisted phrase: only it waits.
    assert redactor.feed("Write to bob") == "Write to "
    assert redactor.feed(", the project") == "bob, the "
    # "manager." could still be the start of "manager.x@example.com", and so "project " waits for it.
    assert redactor.feed(" manager.") == ""
    assert redactor.feed(" Bye. ") == "project manager. Bye. "
    assert redactor.held == 0
    assert redactor.finish() == ""


def test_a_long_run_of_digits_is_held_back_at_most_a_longest_match() -> None:
    redactor = ALL.stream_redactor("output")
    for _ in range(50):
        redactor.feed("1234567890 ")
        assert redactor.held <= 67  # the longest IBAN, spaced


def test_block_raises_before_any_part_of_the_match_is_sent() -> None:
    g = guardrails(pii("block"))
    redactor = g.stream_redactor("output")
    sent = redactor.feed("card 4111 1111 ")
    assert sent == "card "
    sent += redactor.feed("1111 11")
    with pytest.raises(GuardrailBlocked) as caught:
        sent += redactor.feed("11 and more")
    assert "4111" not in sent
    assert caught.value.guardrail_key == "pii"
    assert [f.category for f in caught.value.findings] == ["credit_card"]
    assert redactor.findings == caught.value.findings
    with pytest.raises(RuntimeError):
        redactor.feed("more")


def test_block_at_finish() -> None:
    redactor = guardrails(pii("block")).stream_redactor("output")
    assert redactor.feed("mail bob@example.com") == "mail "
    with pytest.raises(GuardrailBlocked):
        redactor.finish()


def test_log_sends_everything_at_once_and_reports_findings() -> None:
    redactor = guardrails(pii("log")).stream_redactor("output")
    assert redactor.feed("card 4111 1111") == "card 4111 1111"
    assert redactor.feed(" 1111 1111 ok") == " 1111 1111 ok"
    assert redactor.finish() == ""
    assert [(f.category, f.action) for f in redactor.findings] == [("credit_card", "log")]


def test_a_guardrail_not_applied_to_output_leaves_the_stream_alone() -> None:
    redactor = guardrails(pii("block", apply_to=["input"])).stream_redactor("output")
    assert redactor.feed("card 4111 1111 1111 1111") == "card 4111 1111 1111 1111"
    assert redactor.finish() == ""
    with pytest.raises(RuntimeError):
        redactor.finish()


def test_streamed_findings_match_the_whole_text_ones() -> None:
    text = " ".join(sample for sample, _ in SAMPLES)
    whole = ALL.check_text(text, "output").findings
    redactor = ALL.stream_redactor("output")
    for index in range(0, len(text), 7):
        redactor.feed(text[index : index + 7])
    redactor.finish()
    assert sorted(map(repr, redactor.findings)) == sorted(map(repr, whole))


# Random texts built from pieces that look like each category, near misses and prose.
_PIECES = st.sampled_from(
    [sample for sample, _ in SAMPLES]
    + list(SECRETS.values())
    + [
        " ",
        "  ",
        "\n",
        ". ",
        ", ",
        "-",
        "(",
        ")",
        "+",
        "@",
        ".",
        "/",
        "[",
        "]",
        "hello",
        "project",
        "falcon",
        "internal",
        "only",
        "Bearer",
        "bearer ",
        "BEGIN",
        "-----",
        "4111",
        "1111",
        "5555",
        "4444",
        "0958",
        "7946",
        "+44",
        "20",
        "DE89",
        "3704",
        "0044",
        "bob",
        "example",
        ".com",
        "sk-",
        "sk-ant-",
        "ghp_",
        "AKIA",
        "eyJ",
        "ACME-",
        "123456",
        "12345",
        "2024-01-15",
        "$1,299.99",
        "10:30",
        "[SECRET]",
        "[EMAIL]",
        "ÄÖü",
        "ß",
    ]
)
_TEXTS = st.lists(_PIECES, min_size=1, max_size=12).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_TEXTS, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8))
def test_any_chunking_of_any_text_gives_the_whole_text_redaction(
    text: str, cuts: list[int]
) -> None:
    points = sorted({cut % (len(text) + 1) for cut in cuts})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    expected = ALL.check_text(text, "output").text
    redactor = ALL.stream_redactor("output")
    sent = ""
    for chunk in chunks:
        sent += redactor.feed(chunk)
        assert expected.startswith(sent)
    assert sent + redactor.finish() == expected


@settings(max_examples=150, deadline=None)
@given(text=_TEXTS, size=st.integers(min_value=1, max_value=25))
def test_fixed_size_chunks_with_blocking_and_logging_guardrails(text: str, size: int) -> None:
    for action in ("log", "block"):
        g = guardrails(pii(action), {**DENYLIST, "action": action})
        whole = g.check_text(text, "output")
        chunks = [text[index : index + size] for index in range(0, len(text), size)]
        if whole.blocked is None:
            sent, _ = streamed(g, chunks)
            assert sent == text
        else:
            with pytest.raises(GuardrailBlocked):
                streamed(g, chunks)
