"""``plugway admin keys`` and the scoped ``plugway keys create``, as an operator runs them."""

from __future__ import annotations

from pathlib import Path

from runtime.storage.db import open_database
from runtime.storage.keys import AdminKeyCache, KeyCache
from tests.cli.runner import plugway, write_config

CONFIG = """
database_url: sqlite:///{db}
providers: [{{id: demo, kind: demo}}]
models: [{{id: demo, provider: demo}}, {{id: demo-2, provider: demo}}]
organisations: [{{id: acme}}]
"""


def test_admin_and_scoped_keys(tmp_path: Path) -> None:
    config = str(write_config(tmp_path, CONFIG.format(db=tmp_path / "p.db")))
    created = plugway("admin", "keys", "create", "--name", "ops", "--config", config, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    admin_key = created.stdout.strip().splitlines()[-1]
    assert admin_key.startswith("pwa_")
    scoped = plugway("keys", "create", "--org", "acme", "--scopes", "chat,mcp", "--models", "demo", "--config", config, cwd=tmp_path)
    assert scoped.returncode == 0, scoped.stderr
    gateway_key = scoped.stdout.strip().splitlines()[-1]
    engine = open_database(f"sqlite:///{tmp_path / 'p.db'}", create=False)
    assert engine is not None
    import asyncio

    async def look() -> tuple[object, object]:
        return await AdminKeyCache(engine).lookup(admin_key), await KeyCache(engine).lookup(gateway_key)

    admin, key = asyncio.run(look())
    engine.dispose()
    assert admin is not None and admin.name == "ops"  # type: ignore[attr-defined]
    assert key.scopes == frozenset({"chat", "mcp"}) and key.models == frozenset({"demo"})  # type: ignore[attr-defined]
    listed = plugway("keys", "list", "--config", config, cwd=tmp_path)
    assert "chat,mcp" in listed.stdout and "demo" in listed.stdout
    widened = plugway("keys", "update", key.id, "--scopes", "all", "--models", "all", "--config", config, cwd=tmp_path)  # type: ignore[attr-defined]
    assert widened.returncode == 0, widened.stderr
    bad = plugway("keys", "create", "--org", "acme", "--scopes", "chat,sudo", "--config", config, cwd=tmp_path)
    assert bad.returncode != 0 and "scopes" in bad.stderr and "Traceback" not in bad.stderr
    admins = plugway("admin", "keys", "list", "--config", config, cwd=tmp_path)
    admin_id = admins.stdout.split()[0]
    assert plugway("admin", "keys", "revoke", admin_id, "--config", config, cwd=tmp_path).returncode == 0
    assert plugway("admin", "keys", "revoke", admin_id, "--config", config, cwd=tmp_path).returncode == 1
