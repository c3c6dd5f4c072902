"""Initial schema: organisations, api_keys, usage_records and the WhatsApp worker's wa_* tables.

Each table is created only if it is missing, so a database made by the
pre-Alembic ``create_all`` is adopted in place instead of failing.

Revision ID: 0001
Revises:
Create Date: 2026-11-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _missing(table: str) -> bool:
    return not sa.inspect(op.get_bind()).has_table(table)


def upgrade() -> None:
    if _missing("organisations"):
        op.create_table(
            "organisations",
            sa.Column("id", sa.String(length=128), nullable=False),
            sa.Column("created_at", TS, nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
    if _missing("api_keys"):
        op.create_table(
            "api_keys",
            sa.Column("id", sa.String(length=32), nullable=False),
            sa.Column("organisation_id", sa.String(length=128), nullable=False),
            sa.Column("name", sa.String(length=200), nullable=True),
            sa.Column("key_hash", sa.String(length=64), nullable=False),
            sa.Column("prefix", sa.String(length=16), nullable=False),
            sa.Column("rpm", sa.Integer(), nullable=True),
            sa.Column("daily_tokens", sa.Integer(), nullable=True),
            sa.Column("created_at", TS, nullable=False),
            sa.Column("revoked_at", TS, nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_api_keys_key_hash", "api_keys", ["key_hash"], unique=True)
        op.create_index("ix_api_keys_organisation_id", "api_keys", ["organisation_id"])
    if _missing("usage_records"):
        op.create_table(
            "usage_records",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("request_id", sa.String(length=128), nullable=False),
            sa.Column("organisation_id", sa.String(length=128), nullable=False),
            sa.Column("key_id", sa.String(length=32), nullable=True),
            sa.Column("source", sa.String(length=32), nullable=False),
            sa.Column("model", sa.String(length=200), nullable=False),
            sa.Column("provider", sa.String(length=128), nullable=True),
            sa.Column("prompt_tokens", sa.Integer(), nullable=False),
            sa.Column("completion_tokens", sa.Integer(), nullable=False),
            sa.Column("total_tokens", sa.Integer(), nullable=False),
            sa.Column("cost_usd", sa.Float(), nullable=False),
            sa.Column("rounds", sa.Integer(), nullable=False),
            sa.Column("tool_calls", sa.Integer(), nullable=False),
            sa.Column("latency_ms", sa.Float(), nullable=False),
            sa.Column("status", sa.String(length=32), nullable=False),
            sa.Column("created_at", TS, nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_usage_records_created_at", "usage_records", ["created_at"])
        op.create_index("ix_usage_records_key_id", "usage_records", ["key_id"])
        op.create_index("ix_usage_records_organisation_id", "usage_records", ["organisation_id"])
        op.create_index("ix_usage_records_request_id", "usage_records", ["request_id"])
    if _missing("wa_inbound"):
        op.create_table(
            "wa_inbound",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("app_id", sa.String(length=200), nullable=False),
            sa.Column("wamid", sa.String(length=400), nullable=False),
            sa.Column("conversation_key", sa.String(length=600), nullable=False),
            sa.Column("sender", sa.String(length=200), nullable=False),
            sa.Column("sender_name", sa.String(length=400), nullable=True),
            sa.Column("message_type", sa.String(length=50), nullable=False),
            sa.Column("text", sa.Text(), nullable=True),
            sa.Column("message_ts", sa.BigInteger(), nullable=False),
            sa.Column("received_at", sa.Float(), nullable=False),
            sa.Column("status", sa.String(length=20), nullable=False),
            sa.Column("next_attempt_at", sa.Float(), nullable=False),
            sa.Column("lease_owner", sa.String(length=200), nullable=True),
            sa.Column("lease_until", sa.Float(), nullable=True),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("last_error", sa.Text(), nullable=True),
            sa.Column("reply_text", sa.Text(), nullable=True),
            sa.Column("reply_in_history", sa.Boolean(), nullable=False),
            sa.Column("finished_at", sa.Float(), nullable=True),
            sa.Column("raw", sa.Text(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("app_id", "wamid", name="uq_wa_inbound_app_wamid"),
        )
        op.create_index("ix_wa_inbound_conversation", "wa_inbound", ["conversation_key", "message_ts", "id"])
        op.create_index("ix_wa_inbound_status_next", "wa_inbound", ["status", "next_attempt_at"])
    if _missing("wa_outbound"):
        op.create_table(
            "wa_outbound",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("wamid", sa.String(length=400), nullable=False),
            sa.Column("app_id", sa.String(length=200), nullable=False),
            sa.Column("inbound_id", sa.Integer(), nullable=False),
            sa.Column("part_index", sa.Integer(), nullable=False),
            sa.Column("recipient", sa.String(length=200), nullable=False),
            sa.Column("body", sa.Text(), nullable=False),
            sa.Column("status", sa.String(length=20), nullable=False),
            sa.Column("last_error", sa.Text(), nullable=True),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.Column("updated_at", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("inbound_id", "part_index", name="uq_wa_outbound_part"),
            sa.UniqueConstraint("wamid"),
        )
        op.create_index("ix_wa_outbound_inbound_id", "wa_outbound", ["inbound_id"])
    if _missing("wa_status_event"):
        op.create_table(
            "wa_status_event",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("app_id", sa.String(length=200), nullable=False),
            sa.Column("wamid", sa.String(length=400), nullable=False),
            sa.Column("status", sa.String(length=20), nullable=False),
            sa.Column("event_ts", sa.BigInteger(), nullable=False),
            sa.Column("recipient", sa.String(length=200), nullable=True),
            sa.Column("errors", sa.Text(), nullable=True),
            sa.Column("received_at", sa.Float(), nullable=False),
            sa.Column("raw", sa.Text(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("wamid", "status", "event_ts", name="uq_wa_status_event"),
        )
        op.create_index("ix_wa_status_event_wamid", "wa_status_event", ["wamid"])


def downgrade() -> None:
    for table in ("wa_status_event", "wa_outbound", "wa_inbound", "usage_records", "api_keys", "organisations"):
        op.drop_table(table)
