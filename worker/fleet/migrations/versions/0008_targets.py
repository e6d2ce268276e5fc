"""targets: one fleet, many databases. check_runs, alerts, alert_events and check_schedule carry the
target a run, an instance, a transition or a scheduled check belongs to; one run per (check, target,
slot).

"" is what a fleet of one database (no config/targets.yaml: its implicit target `default`) and what
runs once for the whole fleet (the fleet's own checks, the probes) keep their state under: every row
of before is already where it belongs, so nothing moves, nothing fires again and nothing resolves.
A targets.yaml that later names that database `default` adopts those rows (checks.store).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE fleet.check_runs ADD COLUMN target text NOT NULL DEFAULT '';
        ALTER TABLE fleet.check_runs DROP CONSTRAINT check_runs_one_per_slot;
        ALTER TABLE fleet.check_runs ADD CONSTRAINT check_runs_one_per_slot UNIQUE (check_name, target, slot);
        CREATE INDEX check_runs_target_name_started ON fleet.check_runs (target, check_name, started_at DESC);

        ALTER TABLE fleet.alerts ADD COLUMN target text NOT NULL DEFAULT '';
        CREATE INDEX alerts_check_target ON fleet.alerts (check_name, target);

        ALTER TABLE fleet.alert_events ADD COLUMN target text NOT NULL DEFAULT '';

        ALTER TABLE fleet.check_schedule ADD COLUMN target text NOT NULL DEFAULT '';
        ALTER TABLE fleet.check_schedule DROP CONSTRAINT check_schedule_pkey;
        ALTER TABLE fleet.check_schedule ADD PRIMARY KEY (check_name, target);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE fleet.check_schedule DROP CONSTRAINT check_schedule_pkey;
        DELETE FROM fleet.check_schedule WHERE target NOT IN ('', 'default');
        ALTER TABLE fleet.check_schedule DROP COLUMN target;
        ALTER TABLE fleet.check_schedule ADD PRIMARY KEY (check_name);
        ALTER TABLE fleet.alert_events DROP COLUMN target;
        DROP INDEX fleet.alerts_check_target;
        DELETE FROM fleet.alerts WHERE target NOT IN ('', 'default');
        ALTER TABLE fleet.alerts DROP COLUMN target;
        DROP INDEX fleet.check_runs_target_name_started;
        ALTER TABLE fleet.check_runs DROP CONSTRAINT check_runs_one_per_slot;
        DELETE FROM fleet.check_runs WHERE target NOT IN ('', 'default');
        DELETE FROM fleet.check_runs a USING fleet.check_runs b
            WHERE a.check_name = b.check_name AND a.slot = b.slot AND a.id > b.id;
        ALTER TABLE fleet.check_runs ADD CONSTRAINT check_runs_one_per_slot UNIQUE (check_name, slot);
        ALTER TABLE fleet.check_runs DROP COLUMN target;
        """
    )
