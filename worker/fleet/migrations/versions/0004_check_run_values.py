"""check_runs: the value of a run that returned one row (database_size_growth reads the history of
database_size from it), and the reason a run had no data (`no_data_reason`, e.g. a missing role)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE fleet.check_runs
            ADD COLUMN value double precision,   -- the only row's value (NULL: none, several, or NULL)
            ADD COLUMN note text;                -- why there was no data, when the query said (no_data_reason)
        """
    )


def downgrade() -> None:
    op.execute("ALTER TABLE fleet.check_runs DROP COLUMN value, DROP COLUMN note")
