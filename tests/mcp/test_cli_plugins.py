"""`plugway plugins list` (and `--json`) for MCP plugins, and `plugway mcp call`, as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from runtime.orchestration.naming import public_name
from tests.mcp.mcp_helpers import ROOT, TEST_SERVER

LONG_DOTTED_NAME = "reports.quarterly." + "x" * 90
DEAD_ERROR = "missing CRM_URL setting: set it to the CRM's base URL, for example https://crm.example.com/api/v2"


def write_config(tmp_path: Path) -> Path:
    dead = [sys.executable, "-c", f"import sys; sys.stderr.write({DEAD_ERROR!r} + '\\n'); sys.exit(2)"]
    tk = {
        "id": "tk",
        "mcp": {"command": [sys.executable, str(TEST_SERVER), "--legacy"], "roots": [str(tmp_path)]},
        "exclude_tools": ["explode"],
    }
    config = {
        "providers": [{"id": "demo", "kind": "demo"}],
        "models": [{"id": "demo", "provider": "demo"}],
        "orchestration": {"tool_timeout_s": 5},
        "organisations": [
            {
                "id": "acme",
                "plugins": [
                    {"id": "clock"},
                    tk,
                    {"id": "dead", "mcp": {"command": dead}},
                ],
            },
            # The same server for a second organisation: its own connection in the gateway,
            # one row here (the listing describes each distinct configuration once).
            {"id": "beta", "plugins": [tk]},
        ],
    }
    path = tmp_path / "plugway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def plugway(*args: str, cwd: Path, columns: int = 200) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS=str(columns), PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "runtime.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_plugins_list_json_shows_what_the_model_sees(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = plugway("plugins", "list", "--json", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {row["plugin_id"]: row for row in json.loads(result.stdout)["plugins"]}
    clock = rows["clock"]
    assert clock["source"] == "builtin" and clock["organisations"] == ["acme"]
    assert {t["public_name"] for t in clock["tools"]} >= {"clock__now"}

    tk = rows["tk"]
    assert tk["source"] == "mcp" and tk["healthy"] and tk["state"] == "ready"
    assert tk["organisations"] == ["acme", "beta"] and tk["shared"] is False
    assert str(TEST_SERVER) in tk["target"] and tk["protocol"] == "2025-11-25"
    tools = {t["name"]: t for t in tk["tools"]}
    # The names the model sees, hashed ones included.
    assert tools[LONG_DOTTED_NAME]["public_name"] == public_name("tk", LONG_DOTTED_NAME)
    assert tools["echo"]["public_name"] == "tk__echo"
    assert tools["delete_record"]["annotations"] == {"readOnlyHint": False, "destructiveHint": True}
    assert tools["read_resource"]["added_by_plugway"] is True
    not_offered = {t["name"]: t["reason"] for t in tk["not_offered"]}
    assert "MCP task" in not_offered["long_job"]
    assert "exclude_tools" in not_offered["explode"] and "explode" not in tools
    assert [t["uri_template"] for t in tk["resource_templates"]] == ["notes://{topic}"]
    assert {r["uri"] for r in tk["resources"]} == {"notes://welcome", "images://pixel.png", "files://report.csv"}
    assert [p["name"] for p in tk["prompts"]] == ["summarise"]
    assert tk["roots"] == [tmp_path.as_uri()]

    dead = rows["dead"]
    assert not dead["healthy"] and DEAD_ERROR in dead["error"] and dead["tools"] == []


def test_plugins_list_piped_keeps_every_name_and_error_whole_on_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = plugway("plugins", "list", "--config", str(config), cwd=tmp_path, columns=60)
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout
    # plugin, tool, source, health, organisations, about, server: one line per tool.
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    tk = {row[1]: row for row in rows if row[0] == "tk"}
    assert f"{public_name('tk', LONG_DOTTED_NAME)} ({LONG_DOTTED_NAME})" in tk
    assert tk["tk__delete_record"][5].startswith("[destructive]")
    assert tk["long_job"][5].startswith("not offered:")
    assert str(TEST_SERVER) in tk["tk__echo"][6] and tk["tk__echo"][2] == "mcp (stdio)"
    (dead,) = [row for row in rows if row[0] == "dead"]
    assert DEAD_ERROR in dead[3] and dead[3].startswith("unhealthy")


def test_mcp_call_declines_sampling_clearly_and_describes_images(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    asked = plugway("mcp", "call", "tk", "ask_model", '{"question": "hi"}', "--config", str(config), cwd=tmp_path)
    assert asked.returncode == 1
    assert "`plugway mcp call` runs the tool without a model" in asked.stdout
    picture = plugway("mcp", "call", "tk", "screenshot", "--config", str(config), cwd=tmp_path)
    assert picture.returncode == 0, picture.stderr
    assert picture.stdout.strip() == "[image: image/png, 153667 bytes]"
