"""outbox claims: a relay claims rows before publishing, so two relays never publish one row twice

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as b:
        b.add_column(sa.Column("claimed_by", sa.String(128), nullable=True))
        b.add_column(sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as b:
        b.drop_column("claimed_until")
        b.drop_column("claimed_by")
