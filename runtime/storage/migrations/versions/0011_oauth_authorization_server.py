"""plugway as the authorization server of /mcp: registered clients, authorization requests,
grants (each owning a gateway key) and hashed access and refresh tokens.

Revision ID: 0011
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0008"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _has(table: str) -> bool:
    return sa.inspect(op.get_bind()).has_table(table)


def upgrade() -> None:
    # A create_all-era database may already have the tables (see 0001).
    if not _has("oauth_clients"):
        op.create_table(
            "oauth_clients",
            sa.Column("id", sa.String(length=64), nullable=False),
            sa.Column("metadata_json", sa.Text(), nullable=False),
            sa.Column("secret_hash", sa.String(length=64), nullable=True),
            sa.Column("created_at", TS, nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
    if not _has("oauth_authorizations"):
        op.create_table(
            "oauth_authorizations",
            sa.Column("id", sa.String(length=64), nullable=False),
            sa.Column("client_id", sa.String(length=2000), nullable=False),
            sa.Column("client_name", sa.String(length=200), nullable=True),
            sa.Column("params_json", sa.Text(), nullable=False),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("code_hash", sa.String(length=64), nullable=True),
            sa.Column("grant_id", sa.String(length=32), nullable=True),
            sa.Column("expires_at", TS, nullable=False),
            sa.Column("created_at", TS, nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_oauth_authorizations_code_hash", "oauth_authorizations", ["code_hash"], unique=True)
    if not _has("oauth_grants"):
        op.create_table(
            "oauth_grants",
            sa.Column("id", sa.String(length=32), nullable=False),
            sa.Column("client_id", sa.String(length=2000), nullable=False),
            sa.Column("client_name", sa.String(length=200), nullable=True),
            sa.Column("organisation_id", sa.String(length=128), nullable=False),
            sa.Column("key_id", sa.String(length=32), nullable=False),
            sa.Column("scopes", sa.String(length=200), nullable=False),
            sa.Column("resource", sa.String(length=2000), nullable=False),
            sa.Column("approved_by", sa.String(length=300), nullable=False),
            sa.Column("created_at", TS, nullable=False),
            sa.Column("last_used_at", TS, nullable=True),
            sa.Column("revoked_at", TS, nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_oauth_grants_organisation_id", "oauth_grants", ["organisation_id"])
        op.create_index("ix_oauth_grants_key_id", "oauth_grants", ["key_id"])
    if not _has("oauth_tokens"):
        op.create_table(
            "oauth_tokens",
            sa.Column("token_hash", sa.String(length=64), nullable=False),
            sa.Column("kind", sa.String(length=8), nullable=False),
            sa.Column("grant_id", sa.String(length=32), nullable=False),
            sa.Column("expires_at", TS, nullable=False),
            sa.Column("created_at", TS, nullable=False),
            sa.Column("used_at", TS, nullable=True),
            sa.Column("revoked_at", TS, nullable=True),
            sa.PrimaryKeyConstraint("token_hash"),
        )
        op.create_index("ix_oauth_tokens_grant_id", "oauth_tokens", ["grant_id"])


def downgrade() -> None:
    op.drop_table("oauth_tokens")
    op.drop_table("oauth_grants")
    op.drop_table("oauth_authorizations")
    op.drop_table("oauth_clients")
