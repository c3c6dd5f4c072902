"""Usage records carry the usage writer's id for each row, unique: a batch written again after a
connection broke during its commit skips the rows the database already holds (no double billing).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A create_all-era database may already have the column and its index (see 0001).
    inspector = sa.inspect(op.get_bind())
    if "write_id" not in {column["name"] for column in inspector.get_columns("usage_records")}:
        with op.batch_alter_table("usage_records") as batch:
            batch.add_column(sa.Column("write_id", sa.String(length=32), nullable=True))
    if "ix_usage_records_write_id" not in {index["name"] for index in inspector.get_indexes("usage_records")}:
        op.create_index("ix_usage_records_write_id", "usage_records", ["write_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_usage_records_write_id", table_name="usage_records")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("write_id")
