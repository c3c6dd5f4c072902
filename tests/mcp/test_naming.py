import re

import pytest

from runtime.mcp.naming import sanitize_tool_name

OPENAI_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def test_valid_names_are_unchanged() -> None:
    assert sanitize_tool_name("crm__lookup_customer") == "crm__lookup_customer"
    assert sanitize_tool_name("a-b_C9") == "a-b_C9"


def test_disallowed_characters_become_underscores() -> None:
    assert sanitize_tool_name("kb__search.articles v2") == "kb__search_articles_v2"
    assert sanitize_tool_name("héllo/wörld") == "h_llo_w_rld"
    assert sanitize_tool_name("") == "tool"


def test_long_names_are_cut_with_a_stable_distinguishing_hash() -> None:
    first = "orders__reports.quarterly." + "x" * 100 + ".one"
    second = "orders__reports.quarterly." + "x" * 100 + ".two"
    a, b = sanitize_tool_name(first), sanitize_tool_name(second)
    assert len(a) == 64 and len(b) == 64
    assert OPENAI_NAME.match(a) and OPENAI_NAME.match(b)
    assert a != b
    assert a[:55] == b[:55] == "orders__reports_quarterly_" + "x" * 29
    assert sanitize_tool_name(first) == a  # deterministic across calls (and restarts)
    assert sanitize_tool_name(first, max_len=32) == a[:23] + a[-9:]


def test_max_len_must_leave_room_for_the_hash() -> None:
    with pytest.raises(ValueError):
        sanitize_tool_name("x" * 100, max_len=5)
