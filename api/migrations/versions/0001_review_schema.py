"""The review schema: alerts, their audit trail, the outbox, model status, control audit.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00

Written by hand to match ``api/tables.py`` (a unit test compares the two). Column types
are spelled out here rather than imported, so that later changes to the models cannot
silently change what this revision creates.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("alert_id", sa.String(36), nullable=False),
        sa.Column("transaction_id", sa.String(128), nullable=False),
        sa.Column("card_id", sa.String(128), nullable=False),
        sa.Column("terminal_id", sa.String(128), nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=True),
        _timestamp("transaction_time"),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("decision", sa.String(8), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("transaction", sa.JSON(), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        _timestamp("created_at"),
        _timestamp("received_at"),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        _timestamp("claim_expires_at", nullable=True),
        sa.Column("label", sa.String(8), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("decided_by", sa.String(128), nullable=True),
        _timestamp("decided_at", nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint("status IN ('open', 'claimed', 'decided')", name="ck_alerts_status"),
        sa.CheckConstraint("decision IN ('review', 'block')", name="ck_alerts_decision"),
        sa.CheckConstraint("label IS NULL OR label IN ('fraud', 'legit')", name="ck_alerts_label"),
        sa.PrimaryKeyConstraint("alert_id", name="pk_alerts"),
        sa.UniqueConstraint("transaction_id", name="uq_alerts_transaction_id"),
    )
    for column in ("card_id", "terminal_id", "score", "decision", "created_at", "status"):
        op.create_index(f"ix_alerts_{column}", "alerts", [column])

    op.create_table(
        "alert_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.String(36), nullable=False),
        _timestamp("at"),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.CheckConstraint(
            "action IN ('received', 'claimed', 'released', 'claim_expired', 'decided', "
            "'reopened', 'verdict_changed')",
            name="ck_alert_events_action",
        ),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alerts.alert_id"],
            name="fk_alert_events_alert_id_alerts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_alert_events"),
    )
    op.create_index("ix_alert_events_alert_id", "alert_events", ["alert_id"])

    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("key", sa.String(255), nullable=True),
        sa.Column("value", sa.Text(), nullable=False),
        _timestamp("created_at"),
        _timestamp("sent_at", nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_index("ix_outbox_sent_at", "outbox", ["sent_at"])

    op.create_table(
        "model_status",
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("deciding", sa.Boolean(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        _timestamp("emitted_at"),
        _timestamp("received_at"),
        sa.PrimaryKeyConstraint("model_name", name="pk_model_status"),
    )

    op.create_table(
        "control_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("control_id", sa.String(64), nullable=False),
        _timestamp("at"),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_control_events"),
        sa.UniqueConstraint("control_id", name="uq_control_events_control_id"),
    )


def downgrade() -> None:
    op.drop_table("control_events")
    op.drop_table("model_status")
    op.drop_index("ix_outbox_sent_at", table_name="outbox")
    op.drop_table("outbox")
    op.drop_index("ix_alert_events_alert_id", table_name="alert_events")
    op.drop_table("alert_events")
    for column in ("card_id", "terminal_id", "score", "decision", "created_at", "status"):
        op.drop_index(f"ix_alerts_{column}", table_name="alerts")
    op.drop_table("alerts")
