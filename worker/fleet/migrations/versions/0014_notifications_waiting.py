"""notifications waiting behind their channel's bucket, by channel and age: the follow-up's lease of
the oldest (outbox.lease_next_waiting), the fold's 100 oldest (outbox.fold) and "does any wait?"
(outbox.waiting) read this small index instead of scanning every row of the channel. In a storm of
100,000 alerts the follow-up's lease took 237 ms of server time once 190,000 rows were sent (a bitmap
over the channel's rows, sorted), and the Slack drain fell to 0.87 messages/s against a bucket of 0.95
(bench/RESULTS.md); with the index it reads 3 buffers in 0.04 ms.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # implied by outbox.WAITING (its pending rows are pending, its retrying ones throttled), so the
    # planner may use it for every query that filters on WAITING and orders by created_at
    op.execute(
        """
        CREATE INDEX notifications_waiting ON fleet.notifications (channel, created_at)
        WHERE folded_into IS NULL AND (status = 'pending' OR (status = 'retrying' AND throttled))
        """
    )


def downgrade() -> None:
    op.execute("DROP INDEX fleet.notifications_waiting")
