"""runtime.mcp.cli: the functions behind `plugway plugins list` and `plugway mcp call`."""

from __future__ import annotations

import sys
from pathlib import Path

from runtime.config import settings_from_dict
from runtime.mcp.cli import call_tool, describe_mcp_plugins
from tests.mcp.mcp_helpers import TEST_SERVER, tagged_processes


def settings(tag: str = "cli") -> object:
    server = {"command": [sys.executable, str(TEST_SERVER)], "env": {"MCP_TEST_TAG": tag}}
    broken = {"command": [sys.executable, "-c", "raise SystemExit(5)"]}
    return settings_from_dict(
        {
            "providers": [{"id": "demo", "kind": "demo"}],
            "models": [{"id": "demo", "provider": "demo"}],
            "orchestration": {"tool_timeout_s": 1, "max_tool_result_chars": 500},
            "organisations": [
                {"id": "acme", "plugins": [{"id": "clock"}, {"id": "tools", "mcp": server}]},
                {
                    "id": "globex",
                    "plugins": [{"id": "tools", "mcp": server}, {"id": "dead", "mcp": broken}],
                },
            ],
        }
    )


async def test_describe_lists_mcp_plugins_with_live_tools_and_health(tmp_path: Path) -> None:
    rows = await describe_mcp_plugins(settings("describe"), connect_timeout_s=10)  # type: ignore[arg-type]
    assert [row["plugin_id"] for row in rows] == ["tools", "dead"]
    tools, dead = rows
    assert tools["organisations"] == ["acme", "globex"]
    assert tools["healthy"] and tools["transport"] == "stdio" and tools["error"] is None
    assert str(TEST_SERVER) in tools["target"]
    described = {t["name"]: t["description"] for t in tools["tools"]}
    assert described["echo"] == "Return the text unchanged."
    assert not dead["healthy"] and "exited with code 5" in dead["error"] and dead["tools"] == []
    assert tagged_processes("describe") == []  # everything stopped again


async def test_call_tool_by_hand() -> None:
    config = settings("call")
    assert await call_tool(config, "tools", "add", {"a": 3, "b": 4}) == (True, "7")  # type: ignore[arg-type]
    ok, text = await call_tool(config, "tools", "fail", {"message": "bad order id"})  # type: ignore[arg-type]
    assert not ok and "bad order id" in text
    ok, text = await call_tool(config, "tools", "sleep", {"seconds": 5})  # type: ignore[arg-type]
    assert not ok and "did not answer within 1 s" in text
    ok, text = await call_tool(config, "tools", "big", {"size": 5000})  # type: ignore[arg-type]
    assert ok and len(text) <= 500 and "truncated" in text
    ok, text = await call_tool(config, "clock", "now", {})  # type: ignore[arg-type]
    assert not ok and "No MCP plugin 'clock'" in text
    ok, text = await call_tool(config, "dead", "anything", {})  # type: ignore[arg-type]
    assert not ok and "unavailable" in text
    assert tagged_processes("call") == []
