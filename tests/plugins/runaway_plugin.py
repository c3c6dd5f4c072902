"""A plugin whose tool never finishes: pure-Python CPU work run through the isolation pool."""

from __future__ import annotations

import os
from pathlib import Path

from runtime import hookimpl
from runtime.plugin_host.isolation import run_isolated


def _spin(pid_file: str) -> None:
    Path(pid_file).write_text(str(os.getpid()))
    counter = 0
    while True:
        counter += 1


async def spin(pid_file: str) -> str:
    """Compute forever (writes the worker's pid to pid_file first)."""
    await run_isolated(_spin, pid_file)
    return "unreachable"


@hookimpl
def register_tools(register):  # type: ignore[no-untyped-def]
    register(spin)
