"""Key commands run from the CLI are in the audit log, like the management API's actions."""

from __future__ import annotations

import getpass
import socket
from pathlib import Path

from runtime.control.audit import read
from runtime.storage.db import open_database
from tests.cli.runner import plugway, write_config

CONFIG = """
database_url: sqlite:///{db}
providers: [{{id: demo, kind: demo}}]
models: [{{id: demo, provider: demo}}]
organisations: [{{id: acme}}]
"""


def test_key_commands_are_audited_with_the_operating_system_user(tmp_path: Path) -> None:
    config = str(write_config(tmp_path, CONFIG.format(db=tmp_path / "p.db")))

    def run(*args: str) -> str:
        done = plugway(*args, "--config", config, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    run("keys", "create", "--org", "acme", "--name", "ci", "--rpm", "60")
    key_id = _only_key(tmp_path)
    run("keys", "update", key_id, "--rpm", "unlimited", "--scopes", "chat")
    run("keys", "revoke", key_id)
    run("admin", "keys", "create", "--name", "ops")
    admin_id = run("admin", "keys", "list").split()[0]
    run("admin", "keys", "revoke", admin_id)

    engine = open_database(f"sqlite:///{tmp_path / 'p.db'}", create=False)
    assert engine is not None
    try:
        events = read(engine, before_id=None, limit=10)
    finally:
        engine.dispose()
    assert [(e["action"], e["target"]) for e in events] == [
        ("admin_key.revoke", admin_id),
        ("admin_key.create", admin_id),
        ("key.revoke", key_id),
        ("key.update", key_id),
        ("key.create", key_id),
    ]
    assert {e["actor"] for e in events} == {f"cli ({getpass.getuser()}@{socket.gethostname()})"}
    assert all(e["source_ip"] is None for e in events)
    assert events[3]["details"] == {"rpm": None, "scopes": ["chat"]}
    assert events[4]["details"] == {"organisation": "acme", "name": "ci", "rpm": 60, "daily_tokens": None}
    assert events[1]["details"] == {"name": "ops"}


def _only_key(tmp_path: Path) -> str:
    from runtime.storage.keys import list_keys

    engine = open_database(f"sqlite:///{tmp_path / 'p.db'}", create=False)
    assert engine is not None
    try:
        (row,) = list_keys(engine, "acme")
    finally:
        engine.dispose()
    return str(row.id)
