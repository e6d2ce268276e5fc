"""What a check's query sends on the wire (worker.fleet.db.read_only_query), read by a TCP proxy
between it and Postgres: one pipeline closed by one Sync and nothing after it. A Flush after the
Sync is answered by no ReadyForQuery, so a transaction pooler that had released the server on the
Sync's answer gives it back to this client and keeps it there: with PgBouncer's pool of one, every
other client waited until query_wait_timeout (tests/reliability/test_transaction_pooler.py, 1 run in
~15). The proxy holds the server's answers back, so the results have not arrived when the client
closes its pipeline: the moment psycopg's own exit asks for a Flush."""

from __future__ import annotations

import struct

import pytest
import sqlalchemy as sa

from tests.support.slowproxy import SlowProxy
from worker.fleet.db import create_for_checks, read_only_query

_UNTYPED = {80877103, 80877104, 196608}  # SSLRequest, GSSENCRequest, StartupMessage (protocol 3.0)


def messages(stream: bytes) -> list[str]:
    """The frontend messages' types in a client's byte stream, after its untyped startup packets."""
    out, at = [], 0
    while at + 8 <= len(stream) and struct.unpack("!ii", stream[at:at + 8])[1] in _UNTYPED:
        at += struct.unpack("!i", stream[at:at + 4])[0]
    while at + 5 <= len(stream):
        kind, length = chr(stream[at]), struct.unpack("!i", stream[at + 1:at + 5])[0]
        out.append(kind)
        at += 1 + length
    return out


@pytest.fixture
def proxied(pg_admin_url):
    url = sa.make_url(pg_admin_url)
    proxy = SlowProxy(url.port or 5432, url.host or "127.0.0.1").start()
    engine = create_for_checks(url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False))
    yield proxy, engine
    engine.dispose()
    proxy.stop()


def test_a_checks_query_is_one_pipeline_closed_by_one_sync_and_nothing_after_it(proxied):
    proxy, engine = proxied
    assert read_only_query(engine, "SELECT 1 AS value", {}, statement_timeout_ms=5000) == (["value"], [(1,)])
    proxy.sent.clear()
    proxy.delay = 0.05  # the answers arrive after the client has sent its Sync
    for _ in range(3):
        assert read_only_query(engine, "SELECT %(v)s::int AS value", {"v": 7},
                               statement_timeout_ms=5000) == (["value"], [(7,)])
    sent = messages(bytes(proxy.sent))
    assert sent.count("S") == 3, sent  # one round trip each
    assert "H" not in sent, sent  # no Flush: after each Sync, the next query's Parse or nothing
    assert sent[-1] == "S", sent


def test_a_failed_query_ends_its_transaction_and_leaves_no_flush(proxied):
    """The pipeline stops at the failing statement; the ROLLBACK then goes as a simple Query."""
    proxy, engine = proxied
    proxy.delay = 0.05
    with pytest.raises(Exception, match="no_such_table"):
        read_only_query(engine, "SELECT v AS value FROM no_such_table", {}, statement_timeout_ms=5000)
    sent = messages(bytes(proxy.sent))
    assert "H" not in sent and sent[-1] == "Q", sent  # Sync, then ROLLBACK on its own
    assert read_only_query(engine, "SELECT 2 AS value", {}, statement_timeout_ms=5000) == (["value"], [(2,)])
