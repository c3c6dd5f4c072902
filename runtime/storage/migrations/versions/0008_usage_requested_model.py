"""Usage records keep the model name the client sent when it was an alias of the configured model.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A create_all-era database may already have the column (see 0001).
    columns = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("usage_records")}
    if "requested_model" not in columns:
        with op.batch_alter_table("usage_records") as batch:
            batch.add_column(sa.Column("requested_model", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("requested_model")
