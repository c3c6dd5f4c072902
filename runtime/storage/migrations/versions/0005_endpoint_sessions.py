"""Endpoint sessions, and the endpoint that served each usage record.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("endpoint_sessions"):
        _usage_endpoint_column()
        return
    op.create_table(
        "endpoint_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organisation_id", sa.String(length=128), nullable=False),
        sa.Column("endpoint", sa.String(length=64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("messages", sa.Text(), nullable=False),
        sa.Column("lock_owner", sa.String(length=64), nullable=True),
        sa.Column("locked_until", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_endpoint_sessions_organisation_id", "endpoint_sessions", ["organisation_id"])
    op.create_index("ix_endpoint_sessions_expires_at", "endpoint_sessions", ["expires_at"])
    _usage_endpoint_column()


def _usage_endpoint_column() -> None:
    # A database made by create_all before migrations existed may have the column already.
    inspector = sa.inspect(op.get_bind())
    if "endpoint" not in {column["name"] for column in inspector.get_columns("usage_records")}:
        with op.batch_alter_table("usage_records") as batch:
            batch.add_column(sa.Column("endpoint", sa.String(length=64), nullable=True))
    if "ix_usage_records_endpoint" not in {index["name"] for index in inspector.get_indexes("usage_records")}:
        op.create_index("ix_usage_records_endpoint", "usage_records", ["endpoint"])


def downgrade() -> None:
    op.drop_index("ix_usage_records_endpoint", table_name="usage_records")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("endpoint")
    op.drop_table("endpoint_sessions")
