"""The decisions of transactions scored on request, to answer the same request again.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 00:00:00

Written by hand to match ``api/tables.py`` (``ScoreReplyRecord``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "score_replies",
        sa.Column("card_id", sa.String(128), nullable=False),
        sa.Column("transaction_id", sa.String(128), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("decision", sa.JSON(), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("card_id", "transaction_id", name="pk_score_replies"),
    )
    op.create_index("ix_score_replies_stored_at", "score_replies", ["stored_at"])


def downgrade() -> None:
    op.drop_index("ix_score_replies_stored_at", table_name="score_replies")
    op.drop_table("score_replies")
