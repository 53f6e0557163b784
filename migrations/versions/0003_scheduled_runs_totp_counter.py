"""service_runs.scheduled_for (unique per job), users.totp_last_counter, events(kind, ts) index

- ``service_runs.scheduled_for`` with a unique (name, scheduled_for): a scheduled firing is
  claimed by inserting its row, so two schedulers never both run the same job at the same time.
- ``users.totp_last_counter``: the last accepted TOTP time step, so a code cannot be replayed.
- ``ix_events_kind_ts``: live pages and housekeeping read events by kind and age.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import falcon.db.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("service_runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("scheduled_for", falcon.db.types.UTCDateTime(), nullable=True)
        )
        batch_op.create_unique_constraint(
            "uq_service_runs_name_scheduled_for", ["name", "scheduled_for"]
        )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("totp_last_counter", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_kind_ts", ["kind", "ts"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_kind_ts")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("totp_last_counter")
    with op.batch_alter_table("service_runs", schema=None) as batch_op:
        batch_op.drop_constraint("uq_service_runs_name_scheduled_for", type_="unique")
        batch_op.drop_column("scheduled_for")
