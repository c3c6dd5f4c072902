"""Every hook a plugway plugin can implement. Each docstring is the plugin author's documentation.

Hooks are plain functions; tools themselves may be sync or async.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "plugway"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[..., None]


@hookspec
def register_tools(register: Register) -> None:
    """Call ``register(fn)`` for each tool function this plugin offers.

    Optional: ``name="..."`` (default: the function's name) and ``annotations={...}``
    with MCP's tool hints (``readOnlyHint``, ``destructiveHint``, ``idempotentHint``,
    ``openWorldHint``); organisations may require approval for destructive tools, and
    a tool without hints counts as destructive.
    """


@hookspec
def plugin_config_errors(plugin_id: str, config: dict[str, Any]) -> list[str] | None:
    """Return problems with an organisation's ``config:`` for your plugin (an empty list or None when it is valid); start-up stops on any."""
