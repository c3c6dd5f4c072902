"""The control plane: admin keys, key scopes and model allow-lists, stored endpoints, the audit
log, and the trace of each WhatsApp reply.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
COUNTER = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _has(table: str) -> bool:
    return sa.inspect(op.get_bind()).has_table(table)


def _columns(table: str) -> set[str]:
    return {column["name"] for column in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    # Tables a create_all-era database may already have are skipped (see 0001).
    keys = _columns("api_keys")
    with op.batch_alter_table("api_keys") as batch:
        if "scopes" not in keys:
            batch.add_column(sa.Column("scopes", sa.Text(), nullable=True))
        if "models" not in keys:
            batch.add_column(sa.Column("models", sa.Text(), nullable=True))
    if not _has("admin_keys"):
        op.create_table(
            "admin_keys",
            sa.Column("id", sa.String(length=32), nullable=False),
            sa.Column("name", sa.String(length=200), nullable=True),
            sa.Column("key_hash", sa.String(length=64), nullable=False),
            sa.Column("prefix", sa.String(length=16), nullable=False),
            sa.Column("created_at", TS, nullable=False),
            sa.Column("revoked_at", TS, nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_admin_keys_key_hash", "admin_keys", ["key_hash"], unique=True)
    if not _has("audit_log"):
        op.create_table(
            "audit_log",
            sa.Column("id", COUNTER, nullable=False, autoincrement=True),
            sa.Column("at", TS, nullable=False),
            sa.Column("actor", sa.String(length=300), nullable=False),
            sa.Column("action", sa.String(length=64), nullable=False),
            sa.Column("target", sa.String(length=300), nullable=False),
            sa.Column("source_ip", sa.String(length=64), nullable=True),
            sa.Column("details", sa.Text(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_audit_log_at", "audit_log", ["at"])
    if not _has("stored_endpoints"):
        op.create_table(
            "stored_endpoints",
            sa.Column("id", COUNTER, nullable=False, autoincrement=True),
            sa.Column("organisation_id", sa.String(length=128), nullable=False),
            sa.Column("slug", sa.String(length=64), nullable=False),
            sa.Column("definition", sa.Text(), nullable=False),
            sa.Column("created_at", TS, nullable=False),
            sa.Column("updated_at", TS, nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("organisation_id", "slug", name="uq_stored_endpoints_org_slug"),
        )
        op.create_index("ix_stored_endpoints_organisation_id", "stored_endpoints", ["organisation_id"])
        op.create_index("ix_stored_endpoints_updated_at", "stored_endpoints", ["updated_at"])
    if "reply_trace" not in _columns("wa_inbound"):
        with op.batch_alter_table("wa_inbound") as batch:
            batch.add_column(sa.Column("reply_trace", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("wa_inbound") as batch:
        batch.drop_column("reply_trace")
    op.drop_table("stored_endpoints")
    op.drop_table("audit_log")
    op.drop_table("admin_keys")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("models")
        batch.drop_column("scopes")
