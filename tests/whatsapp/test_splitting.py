"""Splitting long replies at natural boundaries."""

from __future__ import annotations

import pytest

from workers.whatsapp.splitting import WHATSAPP_TEXT_LIMIT, split_text


def test_short_text_is_one_part() -> None:
    assert split_text("  Hello there.  ") == ["Hello there."]
    assert split_text("") == []


def test_paragraph_boundary_is_preferred_over_sentences() -> None:
    first = "First paragraph. It has two sentences."
    second = "Second paragraph, " + "x" * 20 + "."
    assert split_text(f"{first}\n\n{second}", limit=60) == [first, second]


def test_sentence_boundary_when_no_paragraph_fits() -> None:
    text = "One sentence here. Another sentence follows! A question? Final words are here."
    assert split_text(text, limit=40) == [
        "One sentence here.",
        "Another sentence follows! A question?",
        "Final words are here.",
    ]


def test_words_then_hard_cut_as_last_resorts() -> None:
    words = split_text("alpha beta gamma delta epsilon", limit=12)
    assert words == ["alpha beta", "gamma delta", "epsilon"]
    assert split_text("x" * 25, limit=10) == ["x" * 10, "x" * 10, "x" * 5]


@pytest.mark.parametrize("size", [4096, 4097, 9000, 20000])
def test_whatsapp_sized_parts_lose_nothing(size: int) -> None:
    sentence = "This is a sentence of moderate length, with a comma. "
    text = (sentence * (size // len(sentence) + 1))[:size].strip()
    parts = split_text(text)
    assert all(0 < len(p) <= WHATSAPP_TEXT_LIMIT for p in parts)
    assert " ".join(parts).split() == text.split()
    assert all(p.endswith(".") for p in parts[:-1])  # cut at sentence ends
