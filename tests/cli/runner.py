"""Running the real ``plugway`` command as a subprocess, and what a clean refusal looks like."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

PLUGWAY = [sys.executable, "-m", "runtime.cli"]
# A SHA-256 hex digest (a stored key hash) or a gateway key must never reach the terminal.
_HASH_OR_KEY = re.compile(r"\b[0-9a-f]{64}\b|pw_[A-Za-z0-9_-]{20,}")


def plugway_env(**extra: str) -> dict[str, str]:
    """The machine's environment without PLUGWAY_* settings, as a user's shell would have it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGWAY_")}
    return {**env, "COLUMNS": "220", "TERM": "dumb", **extra}


def plugway(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PLUGWAY, *args], cwd=cwd, env=env or plugway_env(), input=input,
        capture_output=True, text=True, timeout=timeout,
    )


def assert_clear_failure(
    result: subprocess.CompletedProcess[str], *fragments: str, hidden: Iterable[str] = ()
) -> str:
    """A non-zero exit with exactly one ``plugway: ...`` line on stderr holding every fragment; returns it."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("plugway: "), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert not _HASH_OR_KEY.search(output), output
    for secret in hidden:
        assert secret not in output, output
    return line


def write_config(directory: Path, text: str, name: str = "plugway.yaml") -> Path:
    path = directory / name
    path.write_text(text)
    return path
