"""Cases: the decisions of the stream (compact) and the analysts' notes on cards.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 00:00:00

Written by hand to match ``api/tables.py`` (``DecisionRecord``, ``CaseNoteRecord``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DECISION_INDEXES = ("card_id", "terminal_id", "stored_at")


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("transaction_id", sa.String(128), nullable=False),
        sa.Column("card_id", sa.String(128), nullable=False),
        sa.Column("terminal_id", sa.String(128), nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.Column("transaction_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("decision", sa.String(8), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "decision IN ('allow', 'review', 'block')", name="ck_decisions_decision"
        ),
        sa.PrimaryKeyConstraint("transaction_id", name="pk_decisions"),
    )
    for column in DECISION_INDEXES:
        op.create_index(f"ix_decisions_{column}", "decisions", [column])

    op.create_table(
        "case_notes",
        sa.Column("note_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("card_id", sa.String(128), nullable=False),
        sa.Column("author", sa.String(128), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("note_id", name="pk_case_notes"),
    )
    op.create_index("ix_case_notes_card_id", "case_notes", ["card_id"])


def downgrade() -> None:
    op.drop_index("ix_case_notes_card_id", table_name="case_notes")
    op.drop_table("case_notes")
    for column in DECISION_INDEXES:
        op.drop_index(f"ix_decisions_{column}", table_name="decisions")
    op.drop_table("decisions")
