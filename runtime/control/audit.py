"""The audit log: every admin action (who, what, on what, when, from where), readable through the API.

Actions through the management API name the admin key; key commands run from
the CLI (``plugway keys …``, ``plugway admin keys …``) name ``cli`` with the
operating-system user and host, and no address.
"""

from __future__ import annotations

import getpass
import socket
from functools import partial
from typing import Any

import anyio.to_thread
import orjson
from sqlalchemy import Engine, insert, select
from sqlmodel import SQLModel
from starlette.requests import Request

from runtime.control.auth import client_address
from runtime.storage.keys import AdminInfo
from runtime.storage.models import utcnow

_TABLE = SQLModel.metadata.tables["audit_log"]


def _write(engine: Engine, row: dict[str, Any]) -> None:
    with engine.begin() as connection:
        connection.execute(insert(_TABLE), row)


def _row(actor: str, action: str, target: str, source_ip: str | None, details: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "at": utcnow(),
        "actor": actor[:300],
        "action": action,
        "target": target[:300],
        "source_ip": source_ip,
        "details": orjson.dumps(details).decode() if details else None,
    }


async def audit(request: Request, admin: AdminInfo, action: str, target: str, details: dict[str, Any] | None = None) -> None:
    row = _row(admin.actor, action, target, client_address(request), details)
    await anyio.to_thread.run_sync(partial(_write, request.app.state.gateway.engine, row))


def cli_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        user = "unknown"
    return f"cli ({user}@{socket.gethostname()})"


def record_cli(engine: Engine, action: str, target: str, details: dict[str, Any] | None = None) -> None:
    """An audit row for a key command run from the CLI."""
    _write(engine, _row(cli_actor(), action, target, None, details))


def read(engine: Engine, *, before_id: int | None, limit: int, action: str | None = None) -> list[dict[str, Any]]:
    query = select(_TABLE).order_by(_TABLE.c.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(_TABLE.c.id < before_id)
    if action:
        query = query.where(_TABLE.c.action == action)
    with engine.connect() as connection:
        rows = connection.execute(query).mappings().all()
    return [
        {
            "id": row["id"],
            "at": row["at"].isoformat() if row["at"] else None,
            "actor": row["actor"],
            "action": row["action"],
            "target": row["target"],
            "source_ip": row["source_ip"],
            "details": orjson.loads(row["details"]) if row["details"] else None,
        }
        for row in rows
    ]
