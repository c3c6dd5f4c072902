"""The request log: one row per request with its orchestration trace, and the bodies an
organisation chose to keep.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
COUNTER = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _has(table: str) -> bool:
    return sa.inspect(op.get_bind()).has_table(table)


def upgrade() -> None:
    if not _has("request_log"):
        op.create_table(
            "request_log",
            sa.Column("id", COUNTER, nullable=False, autoincrement=True),
            sa.Column("at", TS, nullable=False),
            sa.Column("request_id", sa.String(length=128), nullable=False),
            sa.Column("route", sa.String(length=128), nullable=False),
            sa.Column("method", sa.String(length=16), nullable=False),
            sa.Column("organisation_id", sa.String(length=128), nullable=True),
            sa.Column("key_id", sa.String(length=32), nullable=True),
            sa.Column("endpoint", sa.String(length=64), nullable=True),
            sa.Column("source", sa.String(length=32), nullable=True),
            sa.Column("model", sa.String(length=200), nullable=True),
            sa.Column("served_model", sa.String(length=200), nullable=True),
            sa.Column("provider", sa.String(length=128), nullable=True),
            sa.Column("status", sa.Integer(), nullable=False),
            sa.Column("error_code", sa.String(length=64), nullable=True),
            sa.Column("error_message", sa.Text(), nullable=True),
            sa.Column("latency_ms", sa.Float(), nullable=False),
            sa.Column("ttfb_ms", sa.Float(), nullable=True),
            sa.Column("prompt_tokens", COUNTER, nullable=False),
            sa.Column("completion_tokens", COUNTER, nullable=False),
            sa.Column("cost_usd", sa.Float(), nullable=False),
            sa.Column("rounds", COUNTER, nullable=False),
            sa.Column("tool_calls", COUNTER, nullable=False),
            sa.Column("tools", sa.Text(), nullable=True),
            sa.Column("trace", sa.Text(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_request_log_at", "request_log", ["at"])
        op.create_index("ix_request_log_request_id", "request_log", ["request_id"])
    if not _has("request_log_bodies"):
        op.create_table(
            "request_log_bodies",
            sa.Column("entry_id", COUNTER, nullable=False, autoincrement=False),
            sa.Column("at", TS, nullable=False),
            sa.Column("organisation_id", sa.String(length=128), nullable=False),
            sa.Column("request", sa.Text(), nullable=True),
            sa.Column("response", sa.Text(), nullable=True),
            sa.PrimaryKeyConstraint("entry_id"),
        )
        op.create_index("ix_request_log_bodies_at", "request_log_bodies", ["at"])
        op.create_index("ix_request_log_bodies_organisation_id", "request_log_bodies", ["organisation_id"])


def downgrade() -> None:
    op.drop_table("request_log_bodies")
    op.drop_table("request_log")
