"""job_schedule: each configured maintenance job's and backlog's queue and longest gap between
scheduled runs, as the running beat has it, so `maintenance_job_health` can tell in SQL a job that is
late or has never run (whatever its schedule's shape: a duration, a cron with lists or ranges, a zone)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE fleet.job_schedule (
            family        text NOT NULL,              -- maintenance or backlog
            job           text NOT NULL,              -- as fleet.job_runs names its runs
            queue         text NOT NULL,              -- where beat sends its runs
            longest_gap_s double precision NOT NULL,  -- its schedule's longest gap between two runs
            enabled       boolean NOT NULL,
            recorded_at   timestamptz NOT NULL,       -- when a beat (re)started with this schedule
            PRIMARY KEY (family, job)
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS fleet.job_schedule")
