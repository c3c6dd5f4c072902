"""The embedded default's SQLite file: commands that only read never create it, and a ``serve`` that
cannot bind its port mints no key."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.cli.runner import assert_clear_failure, plugway


def test_keys_list_in_another_directory_creates_no_database(tmp_path: Path) -> None:
    result = plugway("keys", "list", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "no keys" in result.stderr and result.stdout == ""
    # Where the embedded default keeps its database, so the user can go there.
    assert str(tmp_path / "plugway.db") in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_keys_revoke_and_update_in_another_directory_create_no_database(tmp_path: Path) -> None:
    for command in (["revoke", "key_0123456789abcdef"], ["update", "key_0123456789abcdef", "--rpm", "5"]):
        result = plugway("keys", *command, cwd=tmp_path)
        assert_clear_failure(result, "no key 'key_0123456789abcdef'", str(tmp_path / "plugway.db"))
    assert list(tmp_path.iterdir()) == []


def test_keys_create_says_where_the_key_lives(tmp_path: Path) -> None:
    created = plugway("keys", "create", "--org", "default", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert str(tmp_path / "plugway.db") in created.stderr
    listed = plugway("keys", "list", cwd=tmp_path)
    assert "default" in listed.stdout and "no keys" not in listed.stdout


def test_serve_on_a_busy_port_mints_no_key(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = plugway("serve", "--port", str(port), cwd=tmp_path)
    assert_clear_failure(result, f"cannot listen on 127.0.0.1:{port}")
    assert "pw_" not in result.stdout
    listed = plugway("keys", "list", cwd=tmp_path)
    assert "no keys" in listed.stderr and listed.stdout == "", listed.stdout
