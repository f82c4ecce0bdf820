"""Fencing tokens, holder liveness, unique create times per destination, and dispatch times.

``fence`` grows with every claim of an operation: a worker's writes are conditional on it.
``heartbeat_at`` is the holder's last sign of life (every second), so a crashed holder's job is
requeued within seconds. ``destination`` is the output prefix, for unique create times (and so
unique folder names) per destination. ``dispatched_at`` is when a job runner was last told about a
queued operation (Celery), so a lost message is sent again.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("operations") as batch:
        batch.add_column(sa.Column("fence", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("destination", sa.String(length=1024), nullable=True))
        batch.add_column(sa.Column("dispatched_at", sa.DateTime(), nullable=True))
    op.create_index("ix_operations_destination", "operations", ["destination"])


def downgrade() -> None:
    op.drop_index("ix_operations_destination", table_name="operations")
    with op.batch_alter_table("operations") as batch:
        batch.drop_column("dispatched_at")
        batch.drop_column("destination")
        batch.drop_column("heartbeat_at")
        batch.drop_column("fence")
