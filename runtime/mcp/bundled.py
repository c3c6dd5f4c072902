"""The bundled MCP servers, as plugin entries for the embedded default configuration."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

DATA_DIR_ENV = "PLUGWAY_DATA_DIR"
DEFAULT_DATA_DIR = "plugway-data"


def bundled_plugin_refs(data_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Raw plugin entries (``PluginRef`` dicts) enabling ``crm`` and ``kb`` over stdio.

    Databases go under ``data_dir`` (default ``$PLUGWAY_DATA_DIR`` or ``./plugway-data``,
    made absolute so the servers do not depend on their working directory); the
    servers create it on first start. The servers run with this interpreter, so
    they find the same installed ``mcp`` and ``mcp_servers``.
    """
    root = Path(data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).resolve()
    return [
        {
            "id": "crm",
            "mcp": {
                "command": [sys.executable, "-m", "mcp_servers.support_crm"],
                "env": {"SUPPORT_CRM_DB": str(root / "support_crm.db")},
            },
        },
        {
            "id": "kb",
            "mcp": {
                "command": [sys.executable, "-m", "mcp_servers.knowledge_base"],
                "env": {"KNOWLEDGE_BASE_DB": str(root / "knowledge_base.db")},
            },
        },
    ]
