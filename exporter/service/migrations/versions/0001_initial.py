"""The store as ``Base.metadata.create_all`` made it before Alembic: models and operations.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("parent", sa.String(length=512), nullable=False),
        sa.Column("display_name", sa.String(length=64), nullable=False),
        sa.Column("model_type", sa.String(length=64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("update_time", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_index("ix_models_parent", "models", ["parent"])

    op.create_table(
        "operations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("parent", sa.String(length=512), nullable=False),
        sa.Column("model_name", sa.String(length=512), nullable=False),
        sa.Column("output_config", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("progress_percent", sa.Integer(), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("update_time", sa.DateTime(), nullable=False),
        sa.Column("output_dir", sa.Text(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires", sa.DateTime(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("principal", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_index("ix_operations_parent", "operations", ["parent"])
    op.create_index("ix_operations_state", "operations", ["state"])
    op.create_index("ix_operations_create_time", "operations", ["create_time"])
    op.create_index("ix_operations_principal", "operations", ["principal"])


def downgrade() -> None:
    op.drop_index("ix_operations_principal", table_name="operations")
    op.drop_index("ix_operations_create_time", table_name="operations")
    op.drop_index("ix_operations_state", table_name="operations")
    op.drop_index("ix_operations_parent", table_name="operations")
    op.drop_table("operations")
    op.drop_index("ix_models_parent", table_name="models")
    op.drop_table("models")
