"""Guardrail hits: organisation, endpoint, key, guardrail, category, action, stage, request id; never content.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
# 64-bit ids on PostgreSQL; SQLite's auto-increment key must be spelt INTEGER (already 64-bit).
COUNTER = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "guardrail_events",
        sa.Column("id", COUNTER, autoincrement=True, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("organisation_id", sa.String(length=128), nullable=False),
        sa.Column("endpoint", sa.String(length=128), nullable=True),
        sa.Column("key_id", sa.String(length=32), nullable=True),
        sa.Column("guardrail_key", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_guardrail_events_at", "guardrail_events", ["at"])
    op.create_index("ix_guardrail_events_organisation_id", "guardrail_events", ["organisation_id"])
    op.create_index("ix_guardrail_events_request_id", "guardrail_events", ["request_id"])


def downgrade() -> None:
    op.drop_table("guardrail_events")
