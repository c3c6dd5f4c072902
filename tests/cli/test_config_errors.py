"""Bad configuration and unreachable services: one clear line naming the setting, never a traceback,
never a password."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli.runner import PLUGWAY, assert_clear_failure, plugway, plugway_env, write_config
from tests.fakes.openai_server import free_port

# Commands that open the database, each as a user would type it (the config file is appended).
DATABASE_COMMANDS = [
    ["keys", "list"],
    ["keys", "create", "--org", "acme"],
    ["keys", "revoke", "key_0000000000000000"],
    ["db", "upgrade"],
    ["serve", "--port", "0"],
]


def test_a_config_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "plugway.yaml"
    path.write_bytes("organisations: [{id: café}]\n".encode("latin-1"))
    for command in (["keys", "list"], ["serve"], ["plugins", "list"]):
        result = plugway(*command, "--config", str(path), cwd=tmp_path)
        assert_clear_failure(result, str(path), "UTF-8", "line 1")


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_database_url_that_is_not_a_url(tmp_path: Path, command: list[str]) -> None:
    config = write_config(tmp_path, "database_url: notaurl\norganisations: [{id: acme}]\n")
    result = plugway(*command, "--config", str(config), cwd=tmp_path)
    assert_clear_failure(result, "database_url", "'notaurl'", "sqlite:///")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plugway.yaml"]


def test_database_url_from_the_environment_is_checked_too(tmp_path: Path) -> None:
    result = plugway("keys", "list", cwd=tmp_path, env=plugway_env(PLUGWAY_DATABASE_URL="mysql://root:hunter2@db/x"))
    assert_clear_failure(result, "database_url", "mysql", "root:****@db", hidden=["hunter2"])


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_unreachable_database_is_one_line_with_the_password_masked(tmp_path: Path, command: list[str]) -> None:
    config = write_config(
        tmp_path, "database_url: postgresql+psycopg://nobody:s3cret-pw@127.0.0.1:1/x\norganisations: [{id: acme}]\n"
    )
    started = time.monotonic()
    result = plugway(*command, "--config", str(config), cwd=tmp_path)
    assert_clear_failure(
        result, "database_url", "postgresql+psycopg://nobody:****@127.0.0.1:1/x", "cannot connect", "refused",
        hidden=["s3cret-pw"],
    )
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_sqlite_file_in_a_missing_directory_is_refused(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    config = write_config(tmp_path, f"database_url: sqlite:///{missing}/plugway.db\norganisations: [{{id: acme}}]\n")
    result = plugway(*command, "--config", str(config), cwd=tmp_path)
    assert_clear_failure(result, "database_url", f"directory {missing} does not exist")
    assert not (tmp_path / "no").exists()


def test_redis_url_that_is_not_a_url_stops_serve_at_start(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"database_url: sqlite:///{tmp_path}/p.db\nredis_url: notaurl\n")
    result = plugway("serve", "--port", "0", "--config", str(config), cwd=tmp_path)
    assert_clear_failure(result, "redis_url", "'notaurl'", "redis://")
    env_result = plugway("serve", "--port", "0", cwd=tmp_path, env=plugway_env(PLUGWAY_REDIS_URL="redis://:pw-123@host:notaport/0"))
    assert_clear_failure(env_result, "redis_url", hidden=["pw-123"])


def test_serve_says_clearly_when_redis_is_unreachable_and_starts_failing_closed(tmp_path: Path) -> None:
    port, dead_redis = free_port(), free_port()
    config = write_config(
        tmp_path,
        f"database_url: sqlite:///{tmp_path}/p.db\nredis_url: redis://:pw-456@127.0.0.1:{dead_redis}/0\n"
        "providers: [{id: demo, kind: demo}]\nmodels: [{id: demo, provider: demo}]\norganisations: [{id: acme}]\n",
    )
    process = subprocess.Popen(
        [*PLUGWAY, "serve", "--port", str(port), "--no-worker", "--config", str(config)],
        cwd=tmp_path, env=plugway_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "Uvicorn running" in line or process.poll() is not None:
                break
        output = "".join(lines)
        warning = [line for line in lines if line.startswith("plugway: ") and "redis_url" in line]
        assert warning, output
        assert f"redis://:****@127.0.0.1:{dead_redis}/0" in warning[0] and "503" in warning[0]
        assert "pw-456" not in output and "Traceback" not in output
        assert process.poll() is None, output  # it still starts: requests fail closed until Redis answers
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_serve_on_a_busy_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(tmp_path, f"database_url: sqlite:///{tmp_path}/p.db\n")
        result = plugway("serve", "--port", str(port), "--config", str(config), cwd=tmp_path)
    assert_clear_failure(result, f"cannot listen on 127.0.0.1:{port}", "already in use")


@pytest.mark.parametrize("limit", ["-1", "0", "many"])
def test_whatsapp_failed_limit_must_be_positive(tmp_path: Path, limit: str) -> None:
    config = write_config(tmp_path, f"database_url: sqlite:///{tmp_path}/p.db\n")
    result = plugway("whatsapp", "failed", "--limit", limit, "--config", str(config), cwd=tmp_path)
    assert_clear_failure(result, "--limit", "positive")


def test_a_bad_port_is_one_line(tmp_path: Path) -> None:
    assert_clear_failure(plugway("serve", "--port", "70000", cwd=tmp_path), "--port", "65535")
