"""throughput: an index on (status, finished_at) for the dry-run estimate's recent jobs

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-09

``GET /internal/throughput`` (async_svc/throughput.py) reads the jobs that succeeded in the last
hour, newest first, bounded by a LIMIT: the index serves that range scan, whatever the history.
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_status_finished", "jobs", ["status", "finished_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_status_finished", table_name="jobs")
