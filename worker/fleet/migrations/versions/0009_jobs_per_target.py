"""jobs per target: fleet.job_runs and fleet.job_schedule carry the target a maintenance or backlog
run, or a scheduled job, belongs to; job_schedule has one row per (family, job, target).

As 0008 did for the checks' state, "" is the target of every row of before (a fleet of one database:
its implicit target `default`) and of what runs once for the whole fleet (the fleet pack's jobs):
nothing moves, `maintenance_job_health` judges each job as it did.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE fleet.job_runs ADD COLUMN target text NOT NULL DEFAULT '';
        DROP INDEX fleet.job_runs_job_started;
        CREATE INDEX job_runs_job_target_started ON fleet.job_runs (job, target, started_at DESC);

        ALTER TABLE fleet.job_schedule ADD COLUMN target text NOT NULL DEFAULT '';
        ALTER TABLE fleet.job_schedule DROP CONSTRAINT job_schedule_pkey;
        ALTER TABLE fleet.job_schedule ADD PRIMARY KEY (family, job, target);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE fleet.job_schedule DROP CONSTRAINT job_schedule_pkey;
        DELETE FROM fleet.job_schedule WHERE target <> '';
        ALTER TABLE fleet.job_schedule DROP COLUMN target;
        ALTER TABLE fleet.job_schedule ADD PRIMARY KEY (family, job);

        DROP INDEX fleet.job_runs_job_target_started;
        DELETE FROM fleet.job_runs WHERE target <> '';
        ALTER TABLE fleet.job_runs DROP COLUMN target;
        CREATE INDEX job_runs_job_started ON fleet.job_runs (job, started_at DESC);
        """
    )
