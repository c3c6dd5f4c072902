"""Every table the app owns, gathered from its owners: the core's and each feature's.

The migrations (``runtime.storage.migrations``) name no table's owner. A feature declares
its tables (``Feature.tables``) beside its routes; the core's are listed here. The test
that the migrations give exactly these tables, and a new revision written with
``--autogenerate``, compare the database against :func:`schema`::

    python -m runtime.api.schema revision -m "what changed" [--autogenerate URL]
"""

from __future__ import annotations

import argparse

from sqlalchemy import MetaData
from sqlmodel import SQLModel

from runtime.api.features import FEATURES
from runtime.guardrails.records import GuardrailEvent
from runtime.mcp.oauth.tables import McpOAuthClient, McpOAuthPending, McpOAuthToken
from runtime.requestlog.models import RequestLogBody, RequestLogEntry
from runtime.storage.models import AdminKey, ApiKey, AuditEvent, Organisation, UsageRecord

# The core's own: keys and organisations, usage, the audit log, guardrail events, the request log,
# and the MCP client's OAuth grants to upstream servers (runtime/mcp/oauth/).
CORE_TABLES: tuple[type[SQLModel], ...] = (
    Organisation, ApiKey, AdminKey, AuditEvent, UsageRecord, GuardrailEvent, RequestLogEntry, RequestLogBody,
    McpOAuthToken, McpOAuthClient, McpOAuthPending,
)


def owners() -> dict[str, str]:
    """Table name -> who owns it ("core" or a feature's name); a table two owners claim is an error."""
    owned: dict[str, str] = {}
    claims = [("core", CORE_TABLES), *((feature.name, tuple(feature.tables)) for feature in FEATURES)]
    for owner, tables in claims:
        for model in tables:
            name = str(model.__tablename__)
            if name in owned:
                raise ValueError(f"table {name} is claimed by both {owned[name]} and {owner}")
            owned[name] = owner
    return owned


def schema() -> MetaData:
    """The tables the app owns, as the migrations must leave the database."""
    metadata = MetaData()
    for name in owners():
        SQLModel.metadata.tables[name].to_metadata(metadata)
    return metadata


def main() -> None:
    from alembic import command

    from runtime.storage.engine import make_engine
    from runtime.storage.migrations import alembic_config

    parser = argparse.ArgumentParser(prog="python -m runtime.api.schema")
    sub = parser.add_subparsers(dest="command", required=True)
    revision = sub.add_parser("revision", help="write a new revision file")
    revision.add_argument("-m", "--message", required=True)
    revision.add_argument("--autogenerate", metavar="URL", help="diff the app's tables against this (upgraded) database")
    args = parser.parse_args()
    config = alembic_config()
    if args.autogenerate:
        config.attributes["target_metadata"] = schema()
        engine = make_engine(args.autogenerate)
        with engine.connect() as connection:
            config.attributes["connection"] = connection
            command.revision(config, message=args.message, autogenerate=True)
        engine.dispose()
    else:
        command.revision(config, message=args.message)


if __name__ == "__main__":
    main()
