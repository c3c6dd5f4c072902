"""`plugway serve` with no arguments in an empty directory: the quick start, as a user runs it."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.fakes.openai_server import free_port


def start_embedded(directory: Path, *flags: str) -> tuple[subprocess.Popen[str], str, str]:
    """``plugway serve`` on the embedded default in ``directory``: the process, its base URL and its banner."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGWAY_")}
    env["PLUGWAY_PORT"] = str(port)
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "serve", *flags],
        cwd=directory, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert process.stdout is not None
    output: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        output.append(line)
        if "Uvicorn running" in line or process.poll() is not None:
            break
    return process, f"http://127.0.0.1:{port}", "".join(output)


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[str, str, Path, str]]:
    process, base, banner = start_embedded(tmp_path)
    try:
        match = re.search(r"(pw_[A-Za-z0-9_-]{20,})", banner)
        assert match, banner
        assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200, banner
        assert processes_mentioning(str(tmp_path)), "the bundled MCP servers should be running"
        yield base, match.group(1), tmp_path, banner
    finally:
        process.terminate()  # SIGTERM, as a process manager stops it
        process.wait(timeout=20)
    # The bundled MCP servers were started with databases under this directory.
    assert processes_mentioning(str(tmp_path)) == [], "MCP server processes outlived plugway serve"


def processes_mentioning(text: str) -> list[int]:
    needle = text.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes() and b"Z" not in (entry / "stat").read_bytes().rsplit(b")", 1)[1][:3]:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_quickstart_answers_with_demo_model_and_a_plugin_tool(embedded: tuple[str, str, Path, str]) -> None:
    base, key, directory, _ = embedded
    assert (directory / "plugway.db").exists()
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    reply = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "What is 17 * 23?"}])
    assert reply.choices[0].message.content.startswith("[demo model]")
    assert "391" in reply.choices[0].message.content
    assert reply.model_extra["plugway"]["tool_calls"][0]["name"] == "calculator__evaluate"

    stream = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "What time is it in Tokyo?"}], stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Asia/Tokyo" in text and chunks[-1].usage.total_tokens > 0

    plain = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "Hello there"}])
    assert "demo model" in plain.choices[0].message.content
    assert plain.model_extra["plugway"]["tool_calls"] == []


def test_quickstart_curl_line_works_with_basic_auth(embedded: tuple[str, str, Path, str]) -> None:
    base, key, _, _ = embedded
    response = subprocess.run(
        ["curl", "-s", "-u", f"{key}:", f"{base}/v1/chat/completions", "-H", "Content-Type: application/json",
         "-d", '{"model": "demo", "messages": [{"role": "user", "content": "what is 2 + 2"}]}'],
        capture_output=True, text=True, timeout=30,
    )
    assert '"[demo model] 2 + 2 = 4"' in response.stdout


def test_plugway_chat_streams_and_shows_tool_calls(embedded: tuple[str, str, Path, str]) -> None:
    base, key, _, _ = embedded
    result = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "chat", "--base-url", f"{base}/v1", "--key", key],
        input="What is 12 * 12?\n", capture_output=True, text=True, timeout=60,
        env={**os.environ, "COLUMNS": "200", "TERM": "dumb"},
    )
    assert result.returncode == 0, result.stderr
    assert "⚙ calculator__evaluate" in result.stdout and "ms" in result.stdout
    assert "12 * 12 = 144" in result.stdout


def fresh_shell(directory: Path) -> dict[str, str]:
    """A new terminal's environment: no activated virtualenv, no plugway settings."""
    path = ":".join(p for p in os.environ["PATH"].split(":") if ".venv" not in p)
    return {"PATH": path, "HOME": str(directory), "LANG": "C.UTF-8", "COLUMNS": "200", "TERM": "dumb"}


def test_the_banners_chat_command_works_as_printed_in_a_fresh_shell(embedded: tuple[str, str, Path, str]) -> None:
    base, key, directory, banner = embedded
    # The fixture serves on a port other than 8080: the printed command must say where.
    line = next(line for line in banner.splitlines() if " chat --base-url " in line)
    command = line.split(":", 1)[1].strip()
    assert shlex.split(command)[0].startswith("/"), "the running plugway's absolute path, not a bare `plugway`"
    assert f"{base}/v1" in command and key in command, line
    result = subprocess.run(
        ["bash", "-c", command], input="What is 6 * 7?\n", capture_output=True, text=True, timeout=60,
        cwd=directory.parent, env=fresh_shell(directory),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 * 7 = 42" in result.stdout


def test_the_banner_lists_every_plugin_on_and_asks_one_question_twice(embedded: tuple[str, str, Path, str]) -> None:
    _, _, _, banner = embedded
    assert "clock, calculator, http, crm (MCP), kb (MCP)" in banner
    asked = re.findall(r'"content": "([^"]+)"', banner)
    assert len(asked) == 2 and asked[0] == asked[1], asked


def test_quickstart_keys_are_kept_reused_and_rotated(tmp_path: Path) -> None:
    process, base, first = start_embedded(tmp_path)
    try:
        key = re.search(r"gateway key: (pw_\S+)", first)
        admin = re.search(r"admin key: +(pwa_\S+)", first)
        assert key and admin, first
        refused = httpx.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {key.group(1)}"},
                             json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
        assert refused.status_code == 404
    finally:
        process.terminate()
        rest, _ = process.communicate(timeout=20)
    # The embedded default logs every request, with why it failed.
    assert re.search(r"POST /v1/chat/completions 404 error=model_not_found param=model org=default", rest), rest
    saved = tmp_path / "plugway-keys.env"
    assert saved.stat().st_mode & 0o777 == 0o600
    assert key.group(1) in saved.read_text() and admin.group(1) in saved.read_text()

    process, base, second = start_embedded(tmp_path)
    try:
        assert "reused" in second and f"gateway key: {key.group(1)}" in second and admin.group(1) in second
        assert httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {key.group(1)}"}, timeout=30).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=20)

    process, base, rotated = start_embedded(tmp_path, "--rotate-keys")
    try:
        new_key = re.search(r"gateway key: (pw_\S+)", rotated)
        assert new_key and new_key.group(1) != key.group(1) and "minted" in rotated, rotated
        assert httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {new_key.group(1)}"}, timeout=30).status_code == 200
        assert httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {key.group(1)}"}, timeout=30).status_code == 401
        assert new_key.group(1) in saved.read_text()
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_example_streaming_client(embedded: tuple[str, str, Path, str]) -> None:
    base, key, _, _ = embedded
    script = Path(__file__).parent.parent / "examples" / "client_stream.py"
    result = subprocess.run(
        [sys.executable, str(script), "What is 6 * 7?"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PLUGWAY_BASE_URL": f"{base}/v1", "PLUGWAY_API_KEY": key},
    )
    assert result.returncode == 0, result.stderr
    assert "6 * 7 = 42" in result.stdout and "tokens]" in result.stdout


def test_mcp_tools_by_hand_and_in_the_plugin_list(embedded: tuple[str, str, Path, str]) -> None:
    _, _, directory, _ = embedded
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGWAY_")} | {"COLUMNS": "250"}
    called = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "mcp", "call", "crm", "lookup_customer", '{"query": "C-1002"}'],
        cwd=directory, capture_output=True, text=True, timeout=60, env=env,
    )
    assert called.returncode == 0, called.stderr
    assert "Jonas Becker" in called.stdout
    failed = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "mcp", "call", "crm", "get_ticket", '{"ticket_id": "T-404404"}'],
        cwd=directory, capture_output=True, text=True, timeout=60, env=env,
    )
    assert failed.returncode == 1
    listed = subprocess.run([sys.executable, "-m", "runtime.cli", "plugins", "list"], cwd=directory, capture_output=True, text=True, timeout=60, env=env)
    assert listed.returncode == 0, listed.stderr
    for expected in ("crm", "mcp (stdio)", "lookup_customer", "kb", "search_articles", "ok"):
        assert expected in listed.stdout


def test_the_banner_gives_the_console_and_an_admin_key_that_opens_it(embedded: tuple[str, str, Path, str]) -> None:
    base, _, _, banner = embedded
    console = re.search(r"The console: (\S+)", banner)
    admin_key = re.search(r"(pwa_[A-Za-z0-9_-]{20,})", banner)
    assert console and admin_key, banner
    assert console.group(1) == f"{base}/console"
    assert httpx.get(console.group(1), timeout=10).status_code == 200
    organisations = httpx.get(f"{base}/admin/v1/organisations", headers={"Authorization": f"Bearer {admin_key.group(1)}"}, timeout=10)
    assert organisations.status_code == 200, organisations.text
    assert [o["id"] for o in organisations.json()["data"]] == ["default"]
