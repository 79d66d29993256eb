"""The unbiased sample's mark on alerts, and the detector's events (attacks and drifts).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 10:00:00

Written by hand to match ``api/tables.py`` (``AlertRecord.exploration``,
``DetectorEventRecord``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENT_INDEXES = ("kind", "detected_at", "received_at")


def upgrade() -> None:
    with op.batch_alter_table("alerts") as alerts:
        alerts.add_column(
            sa.Column("exploration", sa.Boolean(), server_default=sa.false(), nullable=False)
        )

    op.create_table(
        "detector_events",
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_detector_events"),
    )
    for column in EVENT_INDEXES:
        op.create_index(f"ix_detector_events_{column}", "detector_events", [column])


def downgrade() -> None:
    for column in EVENT_INDEXES:
        op.drop_index(f"ix_detector_events_{column}", table_name="detector_events")
    op.drop_table("detector_events")
    with op.batch_alter_table("alerts") as alerts:
        alerts.drop_column("exploration")
