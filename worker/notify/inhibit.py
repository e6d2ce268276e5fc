"""Alertmanager's inhibit_rules: while an alert matching `source_matchers` fires, the notices of
alerts matching `target_matchers` (with the same values for the `equal` labels) are held back.

    inhibit_rules:
      - source_matchers: ['alertname="database_down"']
        target_matchers: ['database="monitored"']

Matchers are Alertmanager's strings, `name="value"` with =, !=, =~ or !~ (a regex matches the whole
value). They match an alert's labels plus what every alert has: `alertname` and `check` (the check's
name), `severity`, and `database` (monitored or fleet) for a SQL check. An alert never inhibits
itself. Inhibition is decided when a notice is delivered (as silences are); an inhibited notice is
recorded `suppressed` with the inhibiting alert's fingerprint, and counted for the digest. When the
source resolves, a target still firing notifies at its next evaluation (outbox.ended_suppression).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import Field, field_validator

from worker.fleet.fields import Strict

_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|([^"\s]*))\s*$')


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Matcher:
        m = _MATCHER.match(text)
        if not m:
            raise ValueError(f"matcher {text!r} is not name=\"value\" (operators =, !=, =~, !~)")
        name, op, quoted, bare = m.groups()
        value = bytes(quoted, "utf-8").decode("unicode_escape") if quoted is not None else bare
        if op in ("=~", "!~"):
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"matcher {text!r}: {value!r} is not a regular expression ({exc})") from None
        return cls(name, op, value)

    def matches(self, labels: dict[str, str]) -> bool:
        got = labels.get(self.name, "")
        if self.op == "=":
            return got == self.value
        if self.op == "!=":
            return got != self.value
        hit = re.fullmatch(self.value, got) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'


class InhibitRule(Strict):
    source_matchers: list[str] = Field(min_length=1)
    target_matchers: list[str] = Field(min_length=1)
    equal: list[str] = Field(default_factory=list)

    @field_validator("source_matchers", "target_matchers")
    @classmethod
    def _matchers(cls, v: list[str]) -> list[str]:
        for text in v:
            Matcher.parse(text)
        return v

    def source(self) -> list[Matcher]:
        return [Matcher.parse(t) for t in self.source_matchers]

    def target(self) -> list[Matcher]:
        return [Matcher.parse(t) for t in self.target_matchers]


def alert_labels(check: str, severity: str, labels: dict[str, str], database: str | None) -> dict[str, str]:
    """The label set matchers see: the alert's labels and what every alert has."""
    out = {**labels, "alertname": check, "check": check, "severity": severity}
    if database:
        out["database"] = database
    return out


def inhibiting(rules: list[InhibitRule], target: dict[str, str], target_fp: str,
               firing: list[tuple[str, dict[str, str]]]) -> str | None:
    """The fingerprint of a firing alert that inhibits `target` under one of `rules`, if any.
    `firing` is (fingerprint, alert_labels) of the alerts firing now."""
    for rule in rules:
        if not all(m.matches(target) for m in rule.target()):
            continue
        src = rule.source()
        for fp, labels in firing:
            if fp != target_fp and all(m.matches(labels) for m in src) \
                    and all(labels.get(k, "") == target.get(k, "") for k in rule.equal):
                return fp
    return None


def source_rules(rules: list[InhibitRule], labels: dict[str, str]) -> list[InhibitRule]:
    """The rules under which an alert with these labels inhibits others."""
    return [r for r in rules if all(m.matches(labels) for m in r.source())]

