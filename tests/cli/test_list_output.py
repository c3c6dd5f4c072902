"""Every list command, read by a script (a pipe, ``grep``, ``--json``) and by a person (an 80-column terminal)."""

from __future__ import annotations

import json
import os
import pty
import re
import shlex
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.runner import PLUGWAY, plugway, plugway_env, write_config

LONG_NAME = "nightly export job for the finance team's reconciliation"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path,
        f"database_url: sqlite:///{tmp_path}/p.db\n"
        "providers: [{id: offline, kind: demo}]\nmodels: [{id: demo, provider: offline}]\n"
        "organisations:\n  - id: a-rather-long-organisation-name\n    plugins: [{id: calculator}]\n"
        "    endpoints: [{slug: support-desk, model: demo}]\n",
    )


def run(config: Path, *args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    result = plugway(*args, "--config", str(config), cwd=config.parent, env=plugway_env(COLUMNS=str(columns)))
    assert result.returncode == 0, result.stderr
    return result


def mint(config: Path, name: str = LONG_NAME) -> str:
    created = run(config, "keys", "create", "--org", "a-rather-long-organisation-name", "--name", name, "--rpm", "60")
    return next(word for word in created.stderr.split() if word.startswith("key_"))


def on_a_terminal(config: Path, *args: str, columns: int) -> str:
    """The command's output in a pseudo-terminal ``columns`` wide, colours removed."""
    import fcntl
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in plugway_env().items() if k not in ("COLUMNS", "TERM")} | {"TERM": "xterm"}
    process = subprocess.Popen(
        [*PLUGWAY, *args, "--config", str(config)], cwd=config.parent, env=env, stdout=follower, stderr=follower
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closes when the command exits
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert process.wait(timeout=60) == 0
    os.close(leader)
    return ANSI.sub("", b"".join(chunks).decode()).replace("\r", "")


def test_piped_keys_list_is_one_tab_separated_line_per_key_with_nothing_cut(config: Path) -> None:
    first, second = mint(config), mint(config, "ci")
    listed = run(config, "keys", "list", columns=40)
    lines = listed.stdout.splitlines()
    assert len(lines) == 2, listed.stdout
    rows = {line.split("\t")[0]: line.split("\t") for line in lines}
    assert set(rows) == {first, second}
    assert rows[first][1] == "a-rather-long-organisation-name"
    assert rows[first][2].startswith("pw_") and "…" not in listed.stdout
    assert rows[first][3:6] == ["60", "unlimited", "-"]  # rpm, daily tokens, not revoked
    assert rows[first][6] == LONG_NAME
    # Where the keys live is said to the person, not mixed into the rows.
    assert str(config.parent / "p.db") in listed.stderr and str(config.parent / "p.db") not in listed.stdout


def test_plugins_list_pipes_into_grep_one_line_per_tool(config: Path) -> None:
    command = f"{shlex.join([*PLUGWAY, 'plugins', 'list', '--config', str(config)])} | grep calculator__evaluate"
    found = subprocess.run(["bash", "-c", command], cwd=config.parent, env=plugway_env(COLUMNS="80"), capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    (line,) = found.stdout.splitlines()
    plugin, tool, source, health, organisations, about, _server = line.split("\t")
    assert (plugin, tool, source, health) == ("calculator", "calculator__evaluate", "builtin", "ok")
    assert organisations == "a-rather-long-organisation-name" and about.startswith("Evaluate an arithmetic expression")


def test_every_list_command_prints_one_json_document(config: Path) -> None:
    key_id = mint(config)
    run(config, "admin", "keys", "create", "--name", "ops")
    keys = json.loads(run(config, "keys", "list", "--json").stdout)
    assert [(k["id"], k["name"], k["rpm"], k["daily_tokens"]) for k in keys["keys"]] == [(key_id, LONG_NAME, 60, None)]
    assert "key_hash" not in keys["keys"][0] and keys["keys"][0]["created_at"].startswith("20")
    admins = json.loads(run(config, "admin", "keys", "list", "--json").stdout)
    assert [(a["name"], a["prefix"][:4]) for a in admins["admin_keys"]] == [("ops", "pwa_")]
    plugins = json.loads(run(config, "plugins", "list", "--json").stdout)
    assert "calculator__evaluate" in {t["public_name"] for p in plugins["plugins"] for t in p["tools"]}
    endpoints = json.loads(run(config, "endpoints", "list", "--json").stdout)
    assert [(e["organisation"], e["slug"]) for e in endpoints] == [("a-rather-long-organisation-name", "support-desk")]
    assert json.loads(run(config, "whatsapp", "failed", "--json").stdout) == {"failed": []}


def test_an_empty_list_prints_no_rows_and_says_so_on_stderr(config: Path) -> None:
    listed = run(config, "keys", "list")
    assert listed.stdout == "" and "no keys" in listed.stderr
    assert json.loads(run(config, "keys", "list", "--json").stdout) == {"keys": []}


@pytest.mark.skipif(sys.platform != "linux", reason="pseudo-terminal sizes are set with Linux ioctls here")
def test_tables_on_an_80_column_terminal_keep_identifiers_whole_and_fit(config: Path) -> None:
    key_id = mint(config)
    screen = on_a_terminal(config, "keys", "list", columns=80)
    assert all(len(line) <= 80 for line in screen.splitlines()), screen
    row = next(line for line in screen.splitlines() if key_id in line)
    assert "a-rather-long-organisation-name" in row and "…" not in screen
    plugins = on_a_terminal(config, "plugins", "list", columns=80)
    assert all(len(line) <= 80 for line in plugins.splitlines()), plugins
    assert re.search(r"^calculator\s+calculator__evaluate\s+builtin\s+ok", plugins, re.MULTILINE), plugins
