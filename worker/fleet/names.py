"""The fleet's task and queue names: the catalogue config may name, apart from the Celery app that
registers them (so loading YAML never needs broker settings)."""

from __future__ import annotations

from typing import Any

# Queue per job family, with its time limits (seconds). Redis' visibility_timeout must exceed the
# longest hard limit, or a long task is redelivered while it still runs.
QUEUES: dict[str, dict[str, int]] = {
    "checks": {"soft_time_limit": 150, "time_limit": 180},
    "notify": {"soft_time_limit": 60, "time_limit": 90},
    "maintenance": {"soft_time_limit": 3600, "time_limit": 3900},
    "backlog": {"soft_time_limit": 3600, "time_limit": 3900},
    "digest": {"soft_time_limit": 300, "time_limit": 360},
}
VISIBILITY_TIMEOUT = 7200
BEAT_TICK_KEY = "opsfleet:beat:tick"  # the leading beat writes it each tick; health reads it
assert VISIBILITY_TIMEOUT > max(q["time_limit"] for q in QUEUES.values())

# Every task the fleet has, by its dotted name (family.verb). Config may only name these.
KNOWN_TASKS = frozenset({
    "checks.run",
    "checks.run_batch",
    "checks.snapshot_statements",
    "notify.deliver",
    "notify.sweep",
    "notify.heartbeat",
    "maintenance.run",
    "maintenance.action",
    "digest.daily_summary",
    "digest.weekly_report",
    "digest.monthly_growth",
    "backlog.reprocess_confirmations",
    "backlog.resend_failed_emails",
})
TASK_MODULES = ["tasks.checks", "tasks.notify", "tasks.maintenance", "tasks.digest", "tasks.reports", "tasks.backlog",
                "tasks.heartbeat", "tasks.actions"]


def queue_of(task_name: str) -> str:
    """A task's queue is its family: `notify.deliver` -> notify."""
    return task_name.split(".", 1)[0]


def beat_entry(task_name: str, schedule: float | object, kwargs: dict[str, Any] | None = None,
               expires: float | None = None, queue: str | None = None, own_queue: bool = False) -> dict[str, Any]:
    """A celery beat entry for a known task, sent to its family's queue or `queue` (`expires`: a run not
    started by then is dropped instead of piling up; `own_queue`: `queue` is a target's own, which
    workers near it consume, config/targets.yaml)."""
    if task_name not in KNOWN_TASKS:
        raise ValueError(f"task {task_name!r} is not in worker.fleet.names.KNOWN_TASKS")
    if queue is not None and queue not in QUEUES and not own_queue:
        raise ValueError(f"queue {queue!r} is not one of {', '.join(QUEUES)}")
    options: dict[str, Any] = {"queue": queue or queue_of(task_name)}
    if expires is not None:
        options["expires"] = expires
    return {"task": task_name, "schedule": schedule, "kwargs": dict(kwargs or {}), "options": options}
