"""The backlog tasks' arguments: `celery call` sends kwargs unchecked, so each is validated before
anything is written, and a bad one is named with the form it accepts."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from worker.fleet.errors import ArgumentError
from worker.fleet.timeutil import parse_duration

ACCEPTED = {
    "limit": "a whole number >= 1, or null for no cap",
    "batch_size": "a whole number from 1 to 5000",
    "dry_run": "true or false",
    "older_than": 'a duration such as "0s", "15m", "1h"',
    "stale_after": 'a duration such as "10m" (pending emails older than this are resent)',
    "max_attempts": "a whole number from 1 to 100 (emails tried this often are left failed)",
    "target": "a target of config/targets.yaml (`opsfleet targets list`); needed when the backlog runs on several",
}


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @field_validator("older_than", "stale_after", check_fields=False)
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v


class ReprocessArgs(_Args):
    limit: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=500, ge=1, le=5000)
    dry_run: bool = False
    older_than: str = "0s"
    stale_after: str = "10m"
    target: str | None = None  # resolved by the task against config (tasks/backlog.py)


class ResendArgs(_Args):
    limit: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=100, ge=1, le=5000)
    dry_run: bool = False
    max_attempts: int = Field(default=5, ge=1, le=100)
    target: str | None = None


def parse_args(task_name: str, model: type[_Args], kwargs: dict[str, Any]) -> Any:
    """Validate a task's kwargs; a ValueError names each bad argument and the accepted forms."""
    try:
        return model.model_validate(kwargs)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else "?"
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown argument {name!r}")
            else:
                problems.append(f"{name}={err['input']!r} is invalid (expected {ACCEPTED.get(name, err['msg'])})")
        accepted = ", ".join(f"{n} ({ACCEPTED[n]})" for n in model.model_fields)
        raise ArgumentError(f"{task_name} rejected its arguments, nothing was done: {'; '.join(problems)}. "
                            f"Accepted arguments: {accepted}") from None


# -- results and progress ------------------------------------------------------------------------------
