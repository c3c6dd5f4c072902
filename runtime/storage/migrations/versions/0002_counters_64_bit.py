"""64-bit counters: token counts, rounds, tool calls and the usage id; keys' rpm and daily_tokens.

One upstream answer reporting three billion prompt tokens overflowed
PostgreSQL's INTEGER, and a trillion-token daily cap could not be stored.
On PostgreSQL the columns become BIGINT and the usage id's sequence counts
past 2**31 too; ``ALTER COLUMN ... TYPE bigint`` rewrites the table under an
exclusive lock, so a large ``usage_records`` takes a moment to migrate.
SQLite's INTEGER is already 64-bit: nothing to do there.

The WhatsApp tables keep 32-bit ids and counters: their timestamps are already
BIGINT and no value in them comes from outside (ids are local sequences,
``attempts`` and ``part_index`` are small).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

WIDENED = {
    "usage_records": (
        ("id", False),
        ("prompt_tokens", False),
        ("completion_tokens", False),
        ("total_tokens", False),
        ("rounds", False),
        ("tool_calls", False),
    ),
    "api_keys": (("rpm", True), ("daily_tokens", True)),
}


def _retype(to: sa.types.TypeEngine[int], from_: sa.types.TypeEngine[int], sequence_type: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, columns in WIDENED.items():
        for column, nullable in columns:
            op.alter_column(table, column, type_=to, existing_type=from_, existing_nullable=nullable)
    sequence = op.get_bind().execute(sa.text("SELECT pg_get_serial_sequence('usage_records', 'id')")).scalar()
    if sequence:
        op.execute(f"ALTER SEQUENCE {sequence} AS {sequence_type}")


def upgrade() -> None:
    _retype(sa.BigInteger(), sa.Integer(), "bigint")


def downgrade() -> None:
    # Fails (and changes nothing) if a value no longer fits 32 bits.
    _retype(sa.Integer(), sa.BigInteger(), "integer")
