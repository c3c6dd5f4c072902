"""``plugway admin keys`` and the scoped ``plugway keys create``, as an operator runs them."""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

import httpx

from runtime.storage.db import open_database
from runtime.storage.keys import AdminKeyCache, KeyCache
from tests.cli.runner import PLUGWAY, plugway, plugway_env, write_config
from tests.fakes.openai_server import free_port
from tests.support import wait_until

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


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- a revoked admin key, and what `plugway serve --config` prints -----------------------------------------


def test_serve_with_a_config_prints_the_console_and_a_cli_revoked_admin_key_is_refused(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        f"database_url: sqlite:///{tmp_path / 'p.db'}\nkey_cache_ttl_s: 1\nproviders: [{{id: demo, kind: demo}}]\n"
        "models: [{id: demo, provider: demo}]\norganisations: [{id: acme}]\n",
    )
    port = free_port()
    process = subprocess.Popen(
        [*PLUGWAY, "serve", "--config", str(config), "--port", str(port), "--no-worker"],
        cwd=tmp_path, env=plugway_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not any("Uvicorn running" in line for line in lines) and process.poll() is None and time.monotonic() < deadline:
            lines.append(process.stdout.readline())
        output = "".join(lines)
        (announced,) = [line for line in lines if line.startswith("The console: ")]
        console = f"http://127.0.0.1:{port}/console"
        assert announced.split()[2] == console, output
        assert httpx.get(console, timeout=10).status_code == 200
        # The command it prints mints a key that opens the API...
        command = shlex.split(announced.split("mint one with: ", 1)[1].rstrip(")\n"))
        assert command[:4] == ["plugway", "admin", "keys", "create"], announced
        minted = subprocess.run([*PLUGWAY, *command[1:]], cwd=tmp_path, env=plugway_env(), capture_output=True, text=True, timeout=60)
        assert minted.returncode == 0, minted.stderr
        admin_key = minted.stdout.strip().splitlines()[-1]
        organisations = f"http://127.0.0.1:{port}/admin/v1/organisations"
        assert httpx.get(organisations, headers=bearer(admin_key), timeout=10).status_code == 200
        # ...until `plugway admin keys revoke` withdraws it.
        listed = plugway("admin", "keys", "list", "--config", str(config), cwd=tmp_path)
        assert plugway("admin", "keys", "revoke", listed.stdout.split()[0], "--config", str(config), cwd=tmp_path).returncode == 0
        wait_until(lambda: httpx.get(organisations, headers=bearer(admin_key), timeout=10).status_code != 200, "the revoked admin key is refused")
        refused = httpx.get(organisations, headers=bearer(admin_key), timeout=10)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    finally:
        process.terminate()
        process.wait(timeout=20)
