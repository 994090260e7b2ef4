"""facility board settings: masked names, board device token required

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 18:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # server_default: facilities that exist already get "off"; SQLite and PostgreSQL both add a NOT NULL
    # column with a default in place (batch mode recreates the table only where SQLite needs it).
    with op.batch_alter_table("facility", schema=None) as batch_op:
        batch_op.add_column(sa.Column("board_names", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(
            sa.Column("board_requires_device", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("facility", schema=None) as batch_op:
        batch_op.drop_column("board_requires_device")
        batch_op.drop_column("board_names")
