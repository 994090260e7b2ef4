"""fewer index entries per share: on-shares indexed by status only while pending; two unused indexes gone

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 20:30:00.000000

Every share inserts a token and an on-share and later moves the on-share from pending to sent. The
status index made that move write a new entry into every index of the table; a partial index of the
pending rows (what the sweep reads, in id order) takes no entry for a sent or failed row. The on-share
hip_id index repeated the leading column of the (hip_id, request_id) unique key, and no query reads
tokens by REQUEST-ID (Redis answers that, and the on-share's unique key in SQL).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    with op.batch_alter_table("on_share", schema=None) as batch_op:
        batch_op.drop_index("ix_on_share_status")
        batch_op.drop_index("ix_on_share_hip_id")
        batch_op.create_index("ix_on_share_pending", ["id"], unique=False, postgresql_where=PENDING,
                              sqlite_where=PENDING)  # fmt: skip
    with op.batch_alter_table("token", schema=None) as batch_op:
        batch_op.drop_index("ix_token_request_id")


def downgrade() -> None:
    with op.batch_alter_table("token", schema=None) as batch_op:
        batch_op.create_index("ix_token_request_id", ["request_id"], unique=False)
    with op.batch_alter_table("on_share", schema=None) as batch_op:
        batch_op.drop_index("ix_on_share_pending")
        batch_op.create_index("ix_on_share_hip_id", ["hip_id"], unique=False)
        batch_op.create_index("ix_on_share_status", ["status"], unique=False)
