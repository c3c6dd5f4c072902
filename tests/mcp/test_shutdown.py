"""No orphaned MCP server processes when the gateway process stops."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid

from tests.mcp.mcp_helpers import ROOT, process_alive, tagged_processes

HOST = ROOT / "tests" / "fixtures" / "mcp_manager_host.py"


def start_host(tag: str, *extra: str) -> tuple[subprocess.Popen[str], list[int]]:
    host = subprocess.Popen(
        [sys.executable, str(HOST), tag, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert host.stdout is not None
    line = host.stdout.readline()
    assert line, f"host exited early with {host.wait()}"
    return host, json.loads(line)["pids"]


def wait_gone(pids: list[int], within_s: float = 5.0) -> list[int]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if process_alive(pid)]
        if not alive:
            return []
        time.sleep(0.05)
    return [pid for pid in pids if process_alive(pid)]


def test_sigterm_to_the_gateway_reaps_servers_and_their_children() -> None:
    tag = uuid.uuid4().hex
    host, pids = start_host(tag, "--spawn-grandchild")
    try:
        assert len(pids) == 3 and all(process_alive(pid) for pid in pids)
        assert sorted(tagged_processes(tag)) == sorted(pids)
        host.send_signal(signal.SIGTERM)
        assert host.wait(timeout=15) == 0
        assert wait_gone(pids, within_s=1.0) == []
        assert tagged_processes(tag) == []
    finally:
        host.kill()


def test_servers_exit_when_the_gateway_is_killed_outright() -> None:
    # SIGKILL leaves no chance to clean up: the servers must notice their stdin closing.
    tag = uuid.uuid4().hex
    host, pids = start_host(tag)
    host.kill()
    host.wait(timeout=5)
    assert wait_gone(pids, within_s=5.0) == []
    assert tagged_processes(tag) == []


def test_servers_that_ignore_eof_die_with_a_killed_gateway_and_so_do_their_children() -> None:
    # These servers ignore stdin EOF and SIGTERM, and one of them started a grandchild: only
    # the reaper, which outlives the gateway, can end them once the gateway is SIGKILLed.
    tag = uuid.uuid4().hex
    host, pids = start_host(tag, "--spawn-grandchild", "--linger")
    try:
        assert len(pids) == 3 and sorted(tagged_processes(tag)) == sorted(pids)
        host.kill()
        host.wait(timeout=5)
        assert wait_gone(pids, within_s=8.0) == []
        assert tagged_processes(tag) == []
    finally:
        host.kill()
