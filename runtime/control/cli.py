"""``plugway admin keys create|list|revoke``: the keys that open the management API and the console."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from runtime.cli_output import Column, add_json_option, print_json, print_rows
from runtime.config import load_settings


def add_commands(sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    admin = sub.add_parser("admin", help="the management API's and the console's keys").add_subparsers(dest="admin_command", required=True)
    keys = admin.add_parser("keys", help="admin keys (pwa_...)").add_subparsers(dest="admin_keys_command", required=True)
    create = with_config(keys.add_parser("create", help="mint an admin key; the key alone is the last line on stdout"))
    create.add_argument("--name")
    create.set_defaults(func=cmd_create)
    listing = with_config(keys.add_parser("list", help="list admin keys"))
    add_json_option(listing, "the admin keys (ids and prefixes, never the keys)")
    listing.set_defaults(func=cmd_list)
    revoke = with_config(keys.add_parser("revoke", help="revoke an admin key by id"))
    revoke.add_argument("key_id")
    revoke.set_defaults(func=cmd_revoke)


def _engine(args: argparse.Namespace, *, create: bool = True) -> Any:
    from runtime.storage.db import open_database

    return open_database(load_settings(args.config).database_url, create=create)


def cmd_create(args: argparse.Namespace) -> int:
    from runtime.control.audit import record_cli
    from runtime.storage.keys import mint_admin_key

    engine = _engine(args)
    try:
        secret, row = mint_admin_key(engine, name=args.name)
        record_cli(engine, "admin_key.create", row.id, {"name": args.name} if args.name else None)
    finally:
        engine.dispose()
    print(f"created admin key {row.id}: it opens /admin/v1 and /console", file=sys.stderr)
    print(secret)
    return 0


ADMIN_KEY_COLUMNS = (
    Column("id", "id", identifier=True),
    Column("prefix", lambda row: row["prefix"] + "…"),
    Column("name", "name"),
    Column("created", "created_at"),
    Column("revoked", "revoked_at"),
)


def cmd_list(args: argparse.Namespace) -> int:
    from runtime.storage.keys import list_admin_keys

    engine = _engine(args, create=False)
    if engine is None:
        keys = []
    else:
        try:
            keys = list_admin_keys(engine)
        finally:
            engine.dispose()
    rows = [
        {"id": row.id, "prefix": row.prefix, "name": row.name, "created_at": row.created_at, "revoked_at": row.revoked_at}
        for row in keys
    ]
    if args.json:
        print_json({"admin_keys": rows})
    else:
        print_rows(rows, ADMIN_KEY_COLUMNS, empty="no admin keys" + (" (no database yet)" if engine is None else ""))
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from runtime.control.audit import record_cli
    from runtime.storage.keys import revoke_admin_key

    engine = _engine(args, create=False)
    if engine is None or not revoke_admin_key(engine, args.key_id):
        print(f"plugway: no active admin key '{args.key_id}'", file=sys.stderr)
        return 1
    try:
        record_cli(engine, "admin_key.revoke", args.key_id)
    finally:
        engine.dispose()
    print(f"revoked {args.key_id}")
    return 0
