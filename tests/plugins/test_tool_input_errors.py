"""Bad tool input is a ToolError the model can read, never a raw exception (issue 9, item 14)."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime import ToolError
from runtime.config import ConfigError, settings_from_dict
from runtime.gateway import check_plugins
from tests.plugins.conftest import StubResolver
from tests.plugins.tooling import HOST, call_tool

# -- clock ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"datetime_iso": "9999-12-31T23:59", "from_timezone": "UTC", "to_timezone": "Pacific/Kiritimati"}, "outside the years 1 to 9999"),
        ({"datetime_iso": "0001-01-01T00:00+14:00", "from_timezone": "UTC", "to_timezone": "UTC"}, "outside the years 1 to 9999"),
        ({"datetime_iso": "2026-07-01T09:00", "from_timezone": "a" * 5000, "to_timezone": "UTC"}, "unknown time zone"),
        ({"datetime_iso": "2026-07-01T09:00", "from_timezone": "UTC", "to_timezone": "../../etc/passwd"}, "unknown time zone"),
        ({"datetime_iso": "yesterday", "from_timezone": "UTC", "to_timezone": "UTC"}, "not an ISO 8601"),
    ],
)
def test_clock_conversion_errors_are_tool_errors(arguments: dict[str, str], message: str) -> None:
    with pytest.raises(ToolError, match=message):
        call_tool("clock", "convert_time", **arguments)


_ZONES = st.sampled_from(["UTC", "Pacific/Kiritimati", "Pacific/Niue", "Etc/GMT+12", "Asia/Kolkata", "Europe/Paris", "Nowhere/Else", "", "a" * 300])


@settings(max_examples=150, deadline=None)
@given(moment=st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59)), source=_ZONES, target=_ZONES, days=st.integers(-(10**12), 10**12))
def test_clock_tools_answer_or_refuse_for_any_input(moment: datetime, source: str, target: str, days: int) -> None:
    for tool, arguments in (
        ("convert_time", {"datetime_iso": moment.isoformat(), "from_timezone": source, "to_timezone": target}),
        ("now", {"timezone": target}),
        ("date_add", {"start_date": moment.date().isoformat(), "days": days}),
        ("days_between", {"start_date": moment.date().isoformat(), "end_date": "2026-01-01"}),
    ):
        try:
            assert isinstance(call_tool("clock", tool, **arguments), dict)
        except ToolError:
            pass


# -- http: URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.com:99999/", "not a valid URL"),
        ("http://example.com:0/", "not a valid URL"),
        ("http://example.com:abc/", "not a valid URL"),
        ("http://[::1/", "not a valid URL"),
        ("http://[zzzz::1]/", "not a valid URL"),
        ("http://" + "a" * 300 + ".com/", "longer than 253"),
        ("http://" + "a" * 64 + ".example/", "not a valid host name"),
        ("http://exa mple.com/", "not a valid host name"),
        ("http://a..b/", "not a valid host name"),
        ("http:///path-only", "only absolute http"),
        ("ftp://example.com/", "only absolute http"),
        ("no scheme at all", "only absolute http"),
    ],
)
def test_malformed_urls_are_tool_errors(url: str, message: str, resolver: StubResolver) -> None:
    with pytest.raises(ToolError, match=message):
        call_tool("http", "fetch", url=url)
    assert resolver.lookups == []  # refused before any lookup


def test_an_international_host_name_is_looked_up_in_its_ascii_form(resolver: StubResolver) -> None:
    with pytest.raises(ToolError, match="cannot resolve"):
        call_tool("http", "fetch", url="http://bücher.example/")
    assert resolver.lookups == ["xn--bcher-kva.example"]


# -- http: configuration, checked at start-up ------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"timeout_s": "abc"}, "timeout_s must be a number"),
        ({"timeout_s": 0}, "timeout_s must be a number"),
        ({"timeout_s": True}, "timeout_s must be a number"),
        ({"timeout_s": float("nan")}, "timeout_s must be a number"),
        ({"max_bytes": -1}, "max_bytes must be"),
        ({"max_bytes": "1MB"}, "max_bytes must be"),
        ({"max_bytes": 10**12}, "max_bytes must be"),
        ({"allow_private": "yes"}, "allow_private must be true or false"),
        ({"colour": "red"}, "unknown settings: colour"),
    ],
)
def test_bad_http_settings_stop_start_up(config: dict[str, object], message: str) -> None:
    assert any(message in problem for problem in HOST.config_errors("http", config))
    settings = settings_from_dict({"organisations": [{"id": "a", "plugins": [{"id": "http", "config": config}]}]})
    with pytest.raises(ConfigError, match=rf"organisations\[0\]\.plugins\[0\]\.config: .*{message}"):
        check_plugins(settings, HOST)


def test_good_http_settings_pass() -> None:
    assert HOST.config_errors("http", {}) == []
    assert HOST.config_errors("http", {"allow_private": True, "max_bytes": 5_000_000, "timeout_s": 2.5}) == []
    assert HOST.config_errors("http", {"timeout_s": 30}) == []


def test_a_tool_call_with_unchecked_bad_settings_is_a_tool_error() -> None:
    with pytest.raises(ToolError, match="misconfigured: timeout_s"):
        call_tool("http", "fetch", {"timeout_s": "abc"}, url="http://example.com/")
