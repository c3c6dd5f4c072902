"""clock, calculator and http, called through their registered tool specs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from runtime import ToolContext, ToolError
from runtime.plugin_host.manager import load_plugins

HOST = load_plugins()


def call(plugin: str, tool: str, config: dict[str, Any] | None = None, **arguments: Any) -> Any:
    spec = HOST.plugins[plugin].tools[tool]
    ctx = ToolContext(organisation_id="o", plugin_id=plugin, request_id="r", config=config or {})
    return asyncio.run(spec.invoke(arguments, ctx))


# -- clock -------------------------------------------------------------------------------------


def test_clock_now_in_a_zone() -> None:
    result = call("clock", "now", timezone="Asia/Tokyo")
    moment = datetime.fromisoformat(result["datetime"])
    assert result["utc_offset"] == "+0900"
    assert abs((moment - datetime.now(UTC)).total_seconds()) < 5


def test_clock_conversion_and_arithmetic() -> None:
    converted = call("clock", "convert_time", datetime_iso="2026-07-01T09:00", from_timezone="Europe/Paris", to_timezone="America/New_York")
    assert converted["to"] == "2026-07-01T03:00-04:00"
    assert call("clock", "date_add", start_date="2026-02-27", days=2) == {"date": "2026-03-01", "weekday": "Sunday"}
    assert call("clock", "days_between", start_date="2026-01-01", end_date="2026-12-25") == {"days": 358}


def test_clock_refuses_unknown_zones() -> None:
    with pytest.raises(ToolError, match="unknown time zone"):
        call("clock", "now", timezone="Mars/Olympus")


# -- calculator ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "result"),
    [("17 * 23", 391), ("2 + 3 * 4", 14), ("(2 + 3) * 4", 20), ("2^10", 1024), ("sqrt(144) + abs(-2)", 14), ("10 / 4", 2.5), ("-3 ** 2", -9), ("round(pi, 3)", 3.142)],
)
def test_calculator(expression: str, result: float) -> None:
    assert call("calculator", "evaluate", expression=expression)["result"] == result


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os').system('true')", "unsupported"),
        ("().__class__", "unsupported"),
        ("9 ** 9 ** 9", "too large"),
        ("1 / 0", "division by zero"),
        ("2 +", "cannot parse"),
        ("x" * 600, "longer than"),
    ],
)
def test_calculator_refuses_unsafe_or_bad_input(expression: str, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        call("calculator", "evaluate", expression=expression)


# -- http ---------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/page":
            body = b"<html><head><title>Opening hours</title><style>p{}</style></head><body><h1>Hours</h1><p>Mon-Fri 9-17</p><script>evil()</script></body></html>"
            self._send(200, body, "text/html; charset=utf-8")
        elif self.path == "/big":
            self._send(200, b"a" * 50_000, "text/plain")
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/page")
            self.end_headers()
        elif self.path == "/slow":
            import time

            time.sleep(2)
            self._send(200, b"late", "text/plain")
        elif self.path == "/binary":
            self._send(200, b"\x89PNG\r\n", "image/png")
        else:
            self._send(404, b"missing", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


ALLOW = {"allow_private": True}


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/", "http://localhost:8080/", "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "http://192.168.1.1/", "http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/"],
)
def test_http_refuses_internal_addresses_by_default(url: str) -> None:
    with pytest.raises(ToolError, match="private or internal"):
        call("http", "fetch", url=url)


def test_http_refuses_other_schemes() -> None:
    with pytest.raises(ToolError, match="http"):
        call("http", "fetch", url="file:///etc/passwd")


def test_http_fetches_readable_text_when_allowed(site: str) -> None:
    result = call("http", "fetch", ALLOW, url=f"{site}/redirect")
    assert result["status"] == 200 and result["title"] == "Opening hours"
    assert "Mon-Fri 9-17" in result["text"] and "evil" not in result["text"] and "p{}" not in result["text"]
    assert result["url"].endswith("/page")


def test_http_caps_size_and_time(site: str) -> None:
    result = call("http", "fetch", {**ALLOW, "max_bytes": 1000}, url=f"{site}/big")
    assert len(result["text"]) == 1000 and result["truncated_at_bytes"] == 1000
    with pytest.raises(ToolError, match="longer than 0.5 s"):
        call("http", "fetch", {**ALLOW, "timeout_s": 0.5}, url=f"{site}/slow")


def test_http_summarises_binary_content(site: str) -> None:
    assert "image/png content" in call("http", "fetch", ALLOW, url=f"{site}/binary")["text"]


def test_http_config_is_validated() -> None:
    assert HOST.config_errors("http", {"allow_private": True}) == []
    assert HOST.config_errors("http", {"max_bytes": -1, "colour": "red"})
