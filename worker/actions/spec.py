"""A check's `actions:`: which fixes its alerts propose (worker.actions.catalog), with their parameters,
and whether one runs without asking (`auto`, as `remediate` does)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from worker.actions.catalog import KINDS
from worker.fleet.fields import Strict


class ActionSpec(Strict):
    kind: str
    params: dict[str, Any] = Field(default_factory=dict)
    auto: bool = False  # run on firing, without a person (opt-in, per action and check)

    @model_validator(mode="after")
    def _known(self) -> ActionSpec:
        kind = KINDS.get(self.kind)
        if kind is None:
            from difflib import get_close_matches

            near = get_close_matches(self.kind, KINDS, n=1)
            raise ValueError(f"unknown action kind {self.kind!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                             + "; the kinds: " + ", ".join(sorted(KINDS)))
        unknown = sorted(set(self.params) - set(kind.params))
        if unknown:
            raise ValueError(f"{self.kind} takes no parameter {unknown[0]!r}; its parameters: "
                             + (", ".join(sorted(kind.params)) or "none"))
        missing = [p for p, default in kind.params.items() if default is None and self.params.get(p) is None]
        if missing:
            raise ValueError(f"{self.kind} needs params.{missing[0]}")
        if kind.confirm and self.auto:
            raise ValueError(f"{self.kind} asks a person to type the {kind.confirm}'s name: it cannot be auto")
        if self.kind == "run_backlog" and not str(self.params.get("task", "backlog.")).startswith("backlog."):
            raise ValueError("run_backlog: params.task must be a backlog task (backlog.reprocess_confirmations, ...)")
        return self

    def merged(self) -> dict[str, Any]:
        """Its parameters over the kind's defaults."""
        return {**KINDS[self.kind].params, **self.params}


ActionField = Annotated[ActionSpec, BeforeValidator(lambda v: {"kind": v} if isinstance(v, str) else v)]
