"""listing and retention: keyset indexes for GET /v1/summaries, expires_at / expired_at per job

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

Jobs finished before this revision get their ``expires_at`` from the retention sweeper's first
round (finish time + PRECIS_RETENTION_DAYS; common/store/retention.py), not here: the migration
does not know the configured retention.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

DUE = sa.text("expired_at IS NULL")


def upgrade() -> None:
    # Plain ADD COLUMN (nullable): no table rebuild on SQLite, no rewrite on PostgreSQL.
    op.add_column("jobs", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("expired_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_jobs_tenant_created", "jobs", ["tenant", "created_at", "id"])
    op.create_index("ix_jobs_tenant_status_created", "jobs", ["tenant", "status", "created_at", "id"])
    op.create_index("ix_jobs_expiry_due", "jobs", ["expires_at"], postgresql_where=DUE, sqlite_where=DUE)


def downgrade() -> None:
    op.drop_index("ix_jobs_expiry_due", table_name="jobs")
    op.drop_index("ix_jobs_tenant_status_created", table_name="jobs")
    op.drop_index("ix_jobs_tenant_created", table_name="jobs")
    with op.batch_alter_table("jobs") as b:
        b.drop_column("expired_at")
        b.drop_column("expires_at")
