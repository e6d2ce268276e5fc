"""Run a rule and return its samples: a SQL query (READ ONLY, with timeouts), an HTTP health endpoint
(seeds 002, 003) or a Redis INFO figure (seed 002). Knows nothing of alert state.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.checks.spec import Check, HttpProbe, RedisProbe
from worker.fleet import redisconn
from worker.fleet.db import ConnectionLost, psycopg_text, read_only_query


class CheckError(Exception):
    """The rule could not be evaluated (SQL error, timeout, non-numeric value); recorded, never fatal."""


@dataclass
class Sample:
    labels: dict[str, str]
    value: float | None
    reason: str | None = None  # a query's `no_data_reason` column: why there is no value (a missing role)


def collect(check: Check, monitored: Engine, now: datetime, *, redis_url: str | None = None) -> list[Sample]:
    """The rule's samples at `now`: one per row of a sql check, one for a probe."""
    if check.kind == "sql":
        return collect_sql(check, monitored, now)
    if check.kind == "http":
        return [Sample(labels=dict(check.labels), value=probe_http(check))]
    return [Sample(labels=dict(check.labels), value=probe_redis(check, redis_url))]


# -- sql ---------------------------------------------------------------------------------------------
NO_DATA_REASON = "no_data_reason"  # a column that is not a label: why a NULL value has none
def collect_sql(check: Check, engine: Engine, now: datetime) -> list[Sample]:
    """Run the rule's query READ ONLY with statement and lock timeouts; one sample per row."""
    try:
        cols, rows = _query(check, engine, now)
    except (psycopg.Error, ConnectionLost) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "cannot insert multiple commands" in msg:
            msg = "the query must be one SQL statement (no `;` between statements)"
        raise CheckError(f"check {check.name}: {msg}") from None
    except sa.exc.DBAPIError as exc:  # the pool could not connect
        msg = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise CheckError(f"check {check.name}: {msg}") from None
    if "value" not in cols:
        raise CheckError(f"check {check.name}: the query must return a column named `value` (got {', '.join(cols) or 'no columns'})")
    v = cols.index("value")
    r = cols.index(NO_DATA_REASON) if NO_DATA_REASON in cols else None
    extra = check.labels
    label_cols = [(i, k) for i, k in enumerate(cols) if i not in (v, r)]
    samples = []
    for row in rows:
        labels = {**extra, **{k: str(row[i]) for i, k in label_cols if row[i] is not None}}
        value = _number(row[v], check.name)
        reason = str(row[r]) if r is not None and row[r] is not None and value is None else None
        samples.append(Sample(labels=labels if reason is None else dict(extra), value=value, reason=reason))
    return samples


def _query(check: Check, engine: Engine, now: datetime) -> tuple[list[str], list[tuple]]:
    query, _ = psycopg_text(check.query)  # config validation allows :now as the only bind parameter
    timeout_ms = int(check.timeout.total_seconds() * 1000)

    params = {"now": now}
    try:
        return read_only_query(engine, query, params, statement_timeout_ms=timeout_ms)
    except ConnectionLost:  # the pooled connection went away (a restart): once more, on a new one
        return read_only_query(engine, query, params, statement_timeout_ms=timeout_ms)


def _number(v: Any, check: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float, Decimal)):
        f = float(v)
        if math.isnan(f):
            return None
        return f
    raise CheckError(f"check {check}: column `value` must be numeric, got {type(v).__name__} {str(v)[:40]!r}")


# -- probes ------------------------------------------------------------------------------------------
def _dig(doc, path: str):
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def probe_http(check: Check) -> float:
    """The value is the latency in ms when the endpoint is healthy, and -1 when it is not
    (wrong status, unreachable, or the JSON field differs from `expect`)."""
    probe = check.probe
    assert isinstance(probe, HttpProbe)
    if not probe.url.startswith(("http://", "https://")):
        raise CheckError(f"check {check.name}: probe.url must be http(s)://")
    started = time.monotonic()
    req = urllib.request.Request(probe.url, method=probe.method, headers={"User-Agent": "opsfleet"})
    try:
        with urllib.request.urlopen(req, timeout=check.timeout.total_seconds()) as resp:  # noqa: S310
            status, body = resp.status, resp.read(1_000_000)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(1_000_000) if exc.fp else b""
    except (urllib.error.URLError, TimeoutError, OSError):
        return -1.0
    latency = (time.monotonic() - started) * 1000
    if status != probe.expect_status:
        return -1.0
    if probe.json_field:
        try:
            got = _dig(json.loads(body), probe.json_field)
        except ValueError:
            return -1.0
        if probe.expect is not None and got != probe.expect:
            return -1.0
    return round(latency, 2)


def probe_redis(check: Check, default_url: str | None) -> float | None:
    probe = check.probe
    assert isinstance(probe, RedisProbe)
    url = probe.url or default_url
    if not url:
        raise CheckError(f"check {check.name}: no Redis to ask (set probe.url or REDIS_URL)")
    try:
        info = redisconn.client(url, socket_timeout=check.timeout.total_seconds()).info()
    except (redis.RedisError, OSError) as exc:
        raise CheckError(f"check {check.name}: redis INFO failed: {exc}") from None
    if probe.metric == "keyspace_hit_ratio":
        hits, misses = info.get("keyspace_hits", 0), info.get("keyspace_misses", 0)
        return None if hits + misses == 0 else round(100.0 * hits / (hits + misses), 2)
    if probe.metric == "used_memory_ratio":
        maxmem = info.get("maxmemory", 0)
        return None if not maxmem else round(100.0 * info["used_memory"] / maxmem, 2)
    return float(info.get(probe.metric, 0))
