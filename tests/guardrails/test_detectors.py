"""Each PII category and the denylist: what is found, what is not (ordinary text stays untouched)."""

from __future__ import annotations

import random
import time

import pytest

from tests.guardrails.support import found, guardrails, pii, redacted

ORDINARY = [
    "Order 12345678 shipped on 2024-01-15 and arrives 15/01/2024 at 10:30.",
    "It costs $1,299.99 (or 1.299,99 EUR) in 2023; 3 for 10.",
    "Invoice #100234567, ticket 4711, room 101, version 3.11.7, IP 192.168.1.1.",
    "Call extension 4321 or dial 0 for the operator.",
    "Reference 2024-0001-7788 and serial 1234 5678.",
    "Temperatures of -12.5 to 38.0 degrees, 60/40 split, ratio 16:9.",
    "The sk-learn library and the sk-this-is-a-hyphenated-slug-name are not keys.",
    "Bearer of bad news; the bearer authentication scheme.",
    "Use the pw_reset_token_expiry_seconds_default_value setting.",
    "Email me at bob at example dot com; @handle on social media; a@b.",
    "DE is Germany and FR 12 is a route; ISO 3166 codes.",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_has_no_finding(text: str) -> None:
    assert found(text) == []
    assert redacted(text) == text


@pytest.mark.parametrize(
    "text, expected",
    [
        ("write to bob@example.com today", "write to [EMAIL] today"),
        ("first.last+tag@mail.example.co.uk.", "[EMAIL]."),
        ("<jürgen_m@beispiel.de>", "<[EMAIL]>"),
        ("a@b.co and c@d.org", "[EMAIL] and [EMAIL]"),
    ],
)
def test_email(text: str, expected: str) -> None:
    assert redacted(text, "email") == expected


@pytest.mark.parametrize(
    "text", ["bob@localhost", "user@example.c", "foo@bar", "x@-bad.com.", "@example.com"]
)
def test_not_an_email(text: str) -> None:
    assert found(text, "email") == []


@pytest.mark.parametrize(
    "text, expected",
    [
        ("call +44 20 7946 0958 now", "call [PHONE] now"),
        ("(415) 555-2671", "[PHONE]"),
        ("US: +1 415-555-2671.", "US: [PHONE]."),
        ("Paris +33 1 42 68 53 00", "Paris [PHONE]"),
        ("tel:+14155552671", "tel:[PHONE]"),
        ("Berlin 030 12345678", "Berlin [PHONE]"),  # national, read for DE (a default region)
        ("mobile 06 12 34 56 78", "mobile [PHONE]"),  # national, FR
        ("+1 415-555-2671x234", "[PHONE]x234"),  # extensions written with letters stay
    ],
)
def test_phone(text: str, expected: str) -> None:
    assert redacted(text, "phone") == expected


def test_phone_regions_are_configurable() -> None:
    # A French national number is not read when only US numbers are expected; "+" numbers always are.
    assert redacted("06 12 34 56 78", "phone", phone_regions=["US"]) == "06 12 34 56 78"
    assert redacted("+33 6 12 34 56 78", "phone", phone_regions=["US"]) == "[PHONE]"


@pytest.mark.parametrize(
    "text",
    [
        "555-1234",
        "12345678",
        "+1 555",
        "2024-01-15",
        "15/01/2024",
        "1234-5678-90",
        "30 1234567",  # a German number is written with its trunk 0 (and is no US number)
        "ID4155552671",  # glued to a word
    ],
)
def test_not_a_phone(text: str) -> None:
    assert found(text, "phone") == []


def test_a_table_of_digits_stays_cheap() -> None:
    # Random digit groups: most stretches cannot be a number anywhere and never reach the matcher.
    generator = random.Random(7)
    table = " ".join(str(generator.randrange(10, 99999)) for _ in range(2000))
    started = time.perf_counter()
    found(table)
    assert (
        time.perf_counter() - started < 5.0
    )  # under a second here; every group start through the matcher took 6.5 s


@pytest.mark.parametrize(
    "text, expected",
    [
        ("card 4111 1111 1111 1111.", "card [CREDIT_CARD]."),
        ("4111-1111-1111-1111", "[CREDIT_CARD]"),
        ("4111111111111111", "[CREDIT_CARD]"),
        ("amex 3782 822463 10005", "amex [CREDIT_CARD]"),
        ("mc 5555 5555 5555 4444 exp 12/27", "mc [CREDIT_CARD] exp 12/27"),
        ("call 555 4111 1111 1111 1111 now", "call 555 [CREDIT_CARD] now"),
        ("4111111111111111 123", "[CREDIT_CARD] 123"),
    ],
)
def test_credit_card(text: str, expected: str) -> None:
    assert redacted(text, "credit_card") == expected


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1112",  # Luhn fails
        "1234 5678 9012 3456",  # no card network starts with 1
        "100000000000008",  # Luhn-valid, but no network
        "0000 0000 0000 0000",
        "41111111111111111111111",  # too long
        "order 4111111111111111a",  # glued to a word
    ],
)
def test_not_a_credit_card(text: str) -> None:
    assert found(text, "credit_card") == []


@pytest.mark.parametrize(
    "text, expected",
    [
        ("IBAN DE89 3704 0044 0532 0130 00, thanks", "IBAN [IBAN], thanks"),
        ("GB82WEST12345698765432", "[IBAN]"),
        ("FR14 2004 1010 0505 0001 3M02 606 IS MINE", "[IBAN] IS MINE"),
    ],
)
def test_iban(text: str, expected: str) -> None:
    assert redacted(text, "iban") == expected


@pytest.mark.parametrize(
    "text", ["DE89 3704 0044 0532 0130 01", "XX89 3704 0044 0532 0130 00", "DE89 37"]
)
def test_not_an_iban(text: str) -> None:
    assert found(text, "iban") == []


SECRETS = {
    "OpenAI API key": "sk-proj-abc123DEF456ghi789JKL012mno",
    "Anthropic API key": "sk-ant-api03-AbC123dEf456GhI789jKl0",
    "plugway gateway key": "pw_Zx3kq9Lm2Np7Rt5Vw8Yb1Cd4Fg6Hj0Ks",
    "plugway admin key": "pwa_Zx3kq9Lm2Np7Rt5Vw8Yb1Cd4Fg6Hj0KsQ",
    "AWS access key id": "AKIAIOSFODNN7EXAMPLE",
    "GitHub token": "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "Slack token": "xoxb-1234567890-abcdefghij",
    "Google API key": "AIzaSyA1234567890abcdefghijklmnopqrstuv",
    "Stripe secret key": "sk_live_abcdefghijklmnop1234",
    "JSON Web Token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
}
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
    "KUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==\n"
    "-----END RSA PRIVATE KEY-----"
)


@pytest.mark.parametrize("kind, secret", sorted(SECRETS.items()))
def test_secret(kind: str, secret: str) -> None:
    text = f"my key: {secret}, keep it safe"
    assert redacted(text, "secret") == "my key: [SECRET], keep it safe"
    findings = found(text, "secret")
    assert [(f.category, f.message) for f in findings] == [("secret", kind)]
    assert all(secret not in f.message and secret[:8] not in f.message for f in findings)


def test_private_key_block_and_a_cut_short_one() -> None:
    assert redacted(f"here:\n{PEM}\nbye", "secret") == "here:\n[SECRET]\nbye"
    cut_short = PEM.split("-----END")[0]
    assert redacted(f"{cut_short}(truncated)", "secret") == "[SECRET](truncated)"
    assert redacted(cut_short, "secret") == "[SECRET]"


def test_bearer_token_keeps_the_scheme_word() -> None:
    assert (
        redacted("Authorization: Bearer abcdef1234567890XYZ.", "secret")
        == "Authorization: Bearer [SECRET]."
    )
    # A JWT after Bearer is reported once, as a JWT.
    jwt = SECRETS["JSON Web Token"]
    assert [f.message for f in found(f"Bearer {jwt}", "secret")] == ["JSON Web Token"]


@pytest.mark.parametrize(
    "text",
    [
        "sk-short1",
        "ghp_short123",
        "AKIA1234",
        "eyJhbGciOiJIUzI1NiJ9 alone",
        "AKIAIOSFODNN7EXAMPLE2",  # too long for an access key id
        "-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAKj34GkxFhD90vcNLYLI\n-----END PUBLIC KEY-----",
    ],
)
def test_not_a_secret(text: str) -> None:
    assert found(text, "secret") == []


def test_categories_default_to_all_and_can_be_narrowed() -> None:
    text = "bob@example.com 4111 1111 1111 1111"
    assert redacted(text) == "[EMAIL] [CREDIT_CARD]"
    assert redacted(text, "credit_card") == "bob@example.com [CREDIT_CARD]"


def _denylist(**extra: object) -> str:
    g = guardrails({"key": "words", "kind": "denylist", "action": "redact", **extra})
    return g.check_text(
        "Project Falcon is INTERNAL\nONLY; falconry and projected falcons are fine. ACME-123456, ACME-12345, XACME-123456.",
        "input",
    ).text


def test_denylist_terms_are_whole_words_in_any_case() -> None:
    assert _denylist(terms=["project falcon", "internal only"]) == (
        "[REDACTED] is [REDACTED]; falconry and projected falcons are fine. ACME-123456, ACME-12345, XACME-123456."
    )


def test_denylist_patterns_are_regular_expressions() -> None:
    assert _denylist(patterns=[r"\bACME-\d{6}\b"]) == (
        "Project Falcon is INTERNAL\nONLY; falconry and projected falcons are fine. [REDACTED], ACME-12345, XACME-123456."
    )


def test_denylist_special_characters_in_terms_are_literal() -> None:
    g = guardrails(
        {"key": "w", "kind": "denylist", "action": "redact", "terms": ["c++ (beta)", "a.b"]}
    )
    assert (
        g.check_text("try c++ (beta) or a.b, not axb", "input").text
        == "try [REDACTED] or [REDACTED], not axb"
    )


def test_a_denylist_never_matches_a_placeholder_written_before_it() -> None:
    g = guardrails(
        pii(),
        {
            "key": "w",
            "kind": "denylist",
            "action": "block",
            "terms": ["secret"],
            "patterns": ["(?i)card"],
        },
    )
    checked = g.check_text(
        "card 4111 1111 1111 1111, key sk-proj-abc123DEF456ghi789JKL012mno", "input"
    )
    assert checked.blocked is not None  # "card" in the text itself
    assert [f.category for f in checked.blocked.findings] == ["denylist"]
    quiet = g.check_text(
        "pay with 4111 1111 1111 1111, key sk-proj-abc123DEF456ghi789JKL012mno", "input"
    )
    assert quiet.blocked is None
    assert quiet.text == "pay with [CREDIT_CARD], key [SECRET]"
