"""A worker whose lease ran out mid-attempt (cut off from the network, stalled) while another worker
took the row and sent it: when its own attempt finally fails, it records nothing. Before, its failure
put the sent row back to `retrying`, and the next sweep sent it again (a Slack duplicate beyond the
documented window; for email, a replay). The network itself is not cut here: the lease's expiry is
what the other worker acts on, and `now` steps past it."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from ops.devkit.process import wait_until
from ops.devkit.sink import Reply
from tests.support.notify import T0, due, fire, note, routing, settings_for
from worker.notify.delivery import deliver
from worker.notify.outbox import LEASE


def test_a_worker_whose_lease_ran_out_records_nothing_over_the_row_another_worker_sent(db, sink):
    nid = next(i for i in fire(db, severity="warning") if note(db, i).channel == "slack")
    sink.script("slack.webhook", [Reply(hang=6.0), Reply()])  # the stale worker's request hangs
    stale: dict = {}
    worker_a = threading.Thread(target=lambda: stale.update(out=deliver(
        nid, fleet=db, settings=settings_for(sink), routing=routing(), now=T0, timeout=3.0)))
    worker_a.start()
    try:
        assert wait_until(lambda: len(sink.requests_for("slack.webhook")) == 1, 10)
        after_lease = T0 + LEASE + timedelta(seconds=1)
        taken = deliver(nid, fleet=db, settings=settings_for(sink), routing=routing(), now=after_lease)
        assert taken.status == "sent"
    finally:
        worker_a.join(20)
    assert stale["out"].status == "skipped" and stale["out"].error.startswith("timeout"), stale["out"]
    row = note(db, nid)
    assert (row.status, row.last_error) == ("sent", None)
    assert nid not in due(db, after_lease + timedelta(days=1))  # nothing left to send it again
    assert len(sink.requests_for("slack.webhook")) == 2


pytestmark = pytest.mark.reliability
