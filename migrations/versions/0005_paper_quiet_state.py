"""paper_accounts.quiet_state: the paper trader's quiet retries

The open refusal streaks of an account and the entries it holds in memory only while they last
(falcon.paper.streaks), stored with each batch that changes them so that a restarted trader
holds the same ones. NULL: nothing open.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-14
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ALTER TABLE ... ADD COLUMN on both (nullable, no default): no table copy.
    op.add_column("paper_accounts", sa.Column("quiet_state", sa.JSON(), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite >= 3.35 drops the column in place. Batch mode would copy the table and drop the
        # old one, and with foreign keys on, that DROP deletes every order, fill and ledger entry
        # of the accounts (ON DELETE CASCADE).
        op.execute("ALTER TABLE paper_accounts DROP COLUMN quiet_state")
        return
    op.drop_column("paper_accounts", "quiet_state")
