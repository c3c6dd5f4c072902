"""The embedded default's quick-start keys: minted on the first start, reused on every later one.

They live in ``plugway-keys.env`` beside the SQLite file, readable by the user alone
(mode 0600), as shell lines a user can source (``. ./plugway-keys.env`` sets
``PLUGWAY_API_KEY``, which ``plugway chat`` reads, and ``PLUGWAY_ADMIN_KEY``). A key
that was revoked, or a database that was deleted, gets fresh keys; so do
``plugway serve --rotate-keys`` (which revokes the old ones first) and deleting the file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, select

from runtime.storage.keys import hash_key, mint_admin_key, mint_key, revoke_admin_key, revoke_key
from runtime.storage.models import AdminKey, ApiKey

KEYS_FILE_NAME = "plugway-keys.env"
GATEWAY_KEY_VARIABLE = "PLUGWAY_API_KEY"
ADMIN_KEY_VARIABLE = "PLUGWAY_ADMIN_KEY"
QUICKSTART_KEY_NAME = "quickstart"
_LINE = re.compile(r"^\s*(?:export\s+)?([A-Z_]+)=(\S+)\s*$")


@dataclass(frozen=True)
class QuickstartKeys:
    gateway_key: str
    admin_key: str
    path: Path
    minted: bool  # False: the keys of an earlier start, reused


def keys_file(database_file: Path | None) -> Path:
    """Beside the SQLite file (the embedded default always has one), else in the working directory."""
    directory = database_file.parent if database_file is not None else Path.cwd()
    return directory / KEYS_FILE_NAME


def read_keys(path: Path) -> tuple[str, str] | None:
    """The (gateway key, admin key) the file holds, or None when it is missing or incomplete."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    found = {match.group(1): match.group(2) for line in text.splitlines() if (match := _LINE.match(line))}
    gateway, admin = found.get(GATEWAY_KEY_VARIABLE), found.get(ADMIN_KEY_VARIABLE)
    return (gateway, admin) if gateway and admin else None


def quickstart_keys(engine: Engine, path: Path, *, organisation_id: str, rotate: bool = False) -> QuickstartKeys:
    """The keys in ``path`` when both still open the gateway and the console; else new ones, written there."""
    stored = read_keys(path)
    if stored is not None:
        gateway_row, admin_row = _active(engine, ApiKey, stored[0]), _active(engine, AdminKey, stored[1])
        if not rotate and gateway_row is not None and admin_row is not None:
            return QuickstartKeys(stored[0], stored[1], path, minted=False)
        # Replaced keys must not keep working from a copy somewhere.
        if gateway_row is not None:
            revoke_key(engine, gateway_row.id)
        if admin_row is not None:
            revoke_admin_key(engine, admin_row.id)
    gateway_key, _ = mint_key(engine, organisation_id=organisation_id, name=QUICKSTART_KEY_NAME)
    admin_key, _ = mint_admin_key(engine, name=QUICKSTART_KEY_NAME)
    write_keys(path, gateway_key, admin_key)
    return QuickstartKeys(gateway_key, admin_key, path, minted=True)


def write_keys(path: Path, gateway_key: str, admin_key: str) -> None:
    """Write the file for the user alone: created 0600, and made 0600 if it existed with wider rights."""
    text = (
        "# plugway's quick-start keys for the embedded default, reused on every `plugway serve`.\n"
        "# Use them in a shell with: . ./plugway-keys.env\n"
        "# New keys (the old ones are revoked): plugway serve --rotate-keys, or delete this file.\n"
        f"export {GATEWAY_KEY_VARIABLE}={gateway_key}\n"
        f"export {ADMIN_KEY_VARIABLE}={admin_key}\n"
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        os.write(descriptor, text.encode())
    finally:
        os.close(descriptor)


def _active(engine: Engine, table: type[ApiKey] | type[AdminKey], secret: str) -> ApiKey | AdminKey | None:
    with Session(engine) as session:
        row = session.exec(select(table).where(table.key_hash == hash_key(secret))).first()  # type: ignore[arg-type]
    if isinstance(row, (ApiKey, AdminKey)) and row.revoked_at is None:
        return row
    return None
