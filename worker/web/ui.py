"""The status page (`/`, server-rendered with Jinja2, refreshing itself) and its JSON API (`/api/`),
behind basic auth (OPSFLEET_UI_AUTH; without it they answer 503, never open). Silences are added and
expired through forms that carry a token derived from the credentials (a page of another site cannot
post one), or through the API with a JSON body.

Routes: / (everything; `?target=NAME` narrows its alerts and checks to one target), /alerts/<fingerprint> (one alert, its history and the silence form),
/silences/new, /history, /runbooks/<file>; POST /silences, POST /silences/<id>/expire, POST /outbox/retry
(a dead notification's `id`, or `all` of them: requeued for notify.sweep, or refused with the reason);
/api/status, /api/targets, /api/alerts[/<fingerprint>], /api/checks (status, targets, alerts and checks
take `?target=NAME` as the page does), /api/silences (GET, POST), /api/outbox, /api/jobs, /api/history,
/api/health; POST /api/outbox/retry ({"ids": [...]} or {"all_dead": true, "channel": ...});
DELETE /api/silences/<id>. An unknown target is a 400 with one line."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2
import sqlalchemy as sa

from worker.fleet.timeutil import human_duration, parse_duration
from worker.notify import history, recover, silences
from worker.watch import health
from worker.web import status
from worker.web.approvals import Approvals

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True, undefined=jinja2.StrictUndefined,
)
_env.filters["ago"] = lambda s: human_duration(s) if s is not None else "—"
_env.filters["labels"] = lambda d: ", ".join(f"{k}={v}" for k, v in sorted((d or {}).items()))
_env.filters["short"] = lambda t: (t or "—")[:16].replace("T", " ")
_env.filters["value"] = lambda v: "—" if v is None else f"{v:g}"

REFRESH_S = 30
MAX_BODY = 64 * 1024
FP_RE = re.compile(r"^[0-9a-f]{6,64}$")


@dataclass
class Answer:
    status: int
    body: bytes
    ctype: str = "text/html; charset=utf-8"
    headers: dict[str, str] | None = None


class BadRequest(ValueError):
    """A user's mistake in a form or an API call: answered 400 with the message, nothing written."""


def _json(status_code: int, doc: Any) -> Answer:
    return Answer(status_code, json.dumps(doc, indent=2, default=str).encode(), "application/json; charset=utf-8")


def _page(name: str, status_code: int = 200, **ctx: Any) -> Answer:
    return Answer(status_code, _env.get_template(name).render(**ctx).encode())


def _redirect(to: str) -> Answer:
    return Answer(303, b"", "text/plain", {"Location": to})


class UI:
    def __init__(self, fleet: Any) -> None:
        self.fleet = fleet  # worker.web.server.Fleet: settings, cfg, engine, probes()

    # -- auth ----------------------------------------------------------------------------------------
    def refuse(self, authorization: str | None) -> Answer | None:
        """None when the request carries the configured credentials; else the answer that refuses it."""
        expected = self.fleet.settings.opsfleet_ui_auth
        if not expected:
            return Answer(503, b"the status page is off: set OPSFLEET_UI_AUTH=user:password to turn it on\n",
                          "text/plain; charset=utf-8")
        given = ""
        if authorization and authorization.lower().startswith("basic "):
            try:
                given = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                given = ""
        if hmac.compare_digest(given.encode(), expected.encode()):
            return None
        return Answer(401, b"credentials required\n", "text/plain; charset=utf-8",
                      {"WWW-Authenticate": 'Basic realm="opsfleet", charset="UTF-8"'})

    def token(self) -> str:
        key = (self.fleet.settings.opsfleet_ui_auth or "").encode()
        return hmac.new(key, b"opsfleet-form", hashlib.sha256).hexdigest()[:32]

    # -- GET -------------------------------------------------------------------------------------------
    def get(self, path: str, query: dict[str, list[str]]) -> Answer:
        now = datetime.now(UTC)
        cfg = self.fleet.cfg
        try:
            with self.fleet.engine.connect() as conn:
                if path.startswith("/api/"):
                    return self._api_get(conn, path[len("/api/"):], query, now)
                if path == "/":
                    doc = status.everything(conn, cfg, now, self._target_arg(query))
                    return _page("index.html.j2", doc=doc, groups=status.by_severity(doc["alerts"]),
                                 health=self._health(), refresh=REFRESH_S, token=self.token(),
                                 overview=cfg.targets_declared, window=_window_text(doc["targets"]))
                if path.startswith("/alerts/"):
                    fp = path[len("/alerts/"):]
                    doc = status.alert(conn, cfg, fp, now) if FP_RE.match(fp) else None
                    if doc is None:
                        return _page("message.html.j2", 404, title="No such alert",
                                     text=f"no alert {fp[:64]} (it may have been cleaned up)")
                    return _page("alert.html.j2", a=doc, token=self.token(), form=_prefill(doc),
                                 durations=DURATIONS)
                if path == "/silences/new":
                    form = {"check": _one(query, "check"), "labels": _one(query, "labels"), "duration": "2h",
                            "comment": "", "author": ""}
                    return _page("silence.html.j2", form=form, token=self.token(), checks=sorted(cfg.checks),
                                 durations=DURATIONS, error=None)
                if path == "/history":
                    since, check = self._history_args(query)
                    target, key = self._target_key(query)
                    return _page("history.html.j2", refresh=REFRESH_S, since=_one(query, "since") or "24h",
                                 check=check, checks=sorted(cfg.checks), target=target,
                                 targets=list(cfg.targets) if cfg.targets_declared else [],
                                 entries=history.timeline(conn, now - since, check, 500, key),
                                 sent=history.sent_per_channel(conn, now - since, check, key),
                                 held=None if key is not None else history.held_back(conn, now - since, check))
                if path.startswith("/runbooks/"):
                    return self._runbook(path[len("/runbooks/"):])
        except BadRequest as exc:
            if path.startswith("/api/"):
                return _json(400, {"error": str(exc)})
            return _page("message.html.j2", 400, title="Bad request", text=str(exc))
        return _page("message.html.j2", 404, title="Not found", text=f"no page {path}")

    def _api_get(self, conn: sa.Connection, name: str, query: dict[str, list[str]], now: datetime) -> Answer:
        cfg = self.fleet.cfg
        if name == "status":
            return _json(200, {**status.everything(conn, cfg, now, self._target_arg(query)), "health": self._health()})
        if name == "targets":
            return _json(200, status.targets(conn, cfg, now, self._target_arg(query)))
        if name == "alerts":
            return _json(200, status.alerts(conn, cfg, now, self._target_arg(query)))
        if name.startswith("alerts/"):
            fp = name[len("alerts/"):]
            doc = status.alert(conn, cfg, fp, now) if FP_RE.match(fp) else None
            return _json(200, doc) if doc else _json(404, {"error": f"no alert {fp[:64]}"})
        if name == "checks":
            return _json(200, status.checks(conn, cfg, now, self._target_arg(query)))
        if name == "silences":
            return _json(200, status.silences(conn, now))
        if name == "outbox":
            return _json(200, status.outbox(conn, cfg, now))
        if name == "jobs":
            return _json(200, status.jobs(conn, cfg, now))
        if name == "health":
            return _json(200, self._health())
        if name == "history":
            since, check = self._history_args(query)
            _, key = self._target_key(query)
            return _json(200, {"entries": history.timeline(conn, now - since, check, 1000, key),
                               "sent": history.sent_per_channel(conn, now - since, check, key),
                               "held_back": None if key is not None else history.held_back(conn, now - since, check)})
        return _json(404, {"error": f"no such API /api/{name}", "known": [f"/api/{n}" for n in API]})

    def _history_args(self, query: dict[str, list[str]]) -> tuple[timedelta, str | None]:
        try:
            since = parse_duration(_one(query, "since") or "24h")
        except ValueError as exc:
            raise BadRequest(f"since: {exc}") from None
        check = _one(query, "check") or None
        if check is not None and check not in self.fleet.cfg.checks:
            raise BadRequest(f"check: no check {check!r}")
        return since, check

    def _target_arg(self, query: dict[str, list[str]]) -> str | None:
        """`?target=NAME`: a target of config/targets.yaml (or `default`), or None when not given."""
        given = _one(query, "target")
        if not given:
            return None
        if given not in self.fleet.cfg.targets:
            raise BadRequest(f"target: no target {given[:64]!r} (targets: {', '.join(self.fleet.cfg.targets)}); "
                             "drop ?target= to see them all")
        return given

    def _target_key(self, query: dict[str, list[str]]) -> tuple[str | None, str | None]:
        """`?target=NAME` and its key in the fleet's state (history reads by key); held-back counts are
        per check, not per target, so a narrowed history leaves them out (None), as the CLI does."""
        target = self._target_arg(query)
        return target, None if target is None else self.fleet.cfg.targets[target].key

    def _health(self) -> dict[str, Any]:
        return health.health_document(self.fleet.probes(), self.fleet.settings)

    def _runbook(self, name: str) -> Answer:
        files = self.fleet.cfg.runbooks()
        path = files.get(f"ops/runbooks/{name}")
        if path is None or not path.is_file():
            return _page("message.html.j2", 404, title="No such runbook", text=f"no runbook {name[:100]}")
        return _page("runbook.html.j2", name=name, text=path.read_text(errors="replace"))

    # -- POST / DELETE ---------------------------------------------------------------------------------
    def post(self, path: str, body: bytes, ctype: str) -> Answer:
        now = datetime.now(UTC)
        is_api = path.startswith("/api/")
        try:
            if is_api:
                if not ctype.startswith("application/json"):
                    raise BadRequest("send a JSON body (Content-Type: application/json)")
                try:
                    data = json.loads(body or b"{}")
                except ValueError as exc:
                    raise BadRequest(f"the body is not JSON: {exc}") from None
                if path == "/api/outbox/retry":
                    if not isinstance(data, dict):
                        raise BadRequest('the body must be a JSON object: {"ids": [...]} or {"all_dead": true}')
                    ids = data.get("ids")
                    if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
                        raise BadRequest("ids: give a list of dead notifications' ids")
                    return _json(200, {"retried": [vars(r) for r in self._retry(ids, bool(data.get("all_dead")),
                                                                                   data.get("channel"), now)]})
                if path != "/api/silences":
                    return _json(404, {"error": f"cannot POST {path}"})
                if not isinstance(data, dict):
                    raise BadRequest("the body must be a JSON object: {check, labels, duration, author, comment}")
                return _json(201, {"id": self._add_silence(data, now)})
            form = {k: v[0] for k, v in parse_qs(body.decode(errors="replace"), keep_blank_values=True).items()}
            if not hmac.compare_digest(form.get("token", ""), self.token()):
                raise BadRequest("the form is stale or not from this page: reload it and submit again")
            if path == "/silences":
                try:
                    self._add_silence(form, now)
                except BadRequest as exc:
                    return _page("silence.html.j2", 400, form=form, token=self.token(),
                                 checks=sorted(self.fleet.cfg.checks), durations=DURATIONS, error=str(exc))
                back = form.get("back", "")
                return _redirect(back if back.startswith("/alerts/") else "/#silences")
            if path == "/outbox/retry":
                done = self._retry([form["id"]] if form.get("id") else None, form.get("all") == "1",
                                   form.get("channel") or None, now)
                return _page("message.html.j2", title="Dead notifications retried", text=_retried_text(done, self.fleet.cfg))
            m = re.fullmatch(r"/alerts/([0-9a-f]{6,64})/actions/([0-9a-f-]{36})", path)
            if m:
                who = (self.fleet.settings.opsfleet_ui_auth or "").split(":", 1)[0] + " (status page)"
                status_code, text = Approvals(self.fleet).approve(m.group(2), who=who, via="page",
                                                                  confirm=form.get("confirm"))
                return _page("message.html.j2", status_code, title="Action", text=text,
                             back=f"/alerts/{m.group(1)}#actions")
            m = re.fullmatch(r"/alerts/([0-9a-f]{6,64})/evidence", path)
            if m:
                from worker.checks import evidence

                try:
                    evidence.gather_again(self.fleet.engine, self.fleet.cfg, self.fleet.settings, m.group(1), now)
                except LookupError as exc:
                    raise BadRequest(str(exc)) from None
                return _redirect(f"/alerts/{m.group(1)}#evidence")
            m = re.fullmatch(r"/silences/([0-9a-f-]{8,36})/expire", path)
            if m:
                self._expire(m.group(1), now)
                return _redirect("/#silences")
        except BadRequest as exc:
            if is_api:
                return _json(400, {"error": str(exc)})
            return _page("message.html.j2", 400, title="Bad request", text=str(exc))
        return _page("message.html.j2", 404, title="Not found", text=f"cannot POST {path}")

    # -- what carries its own proof: a Slack signature, a signed link (worker.web.approvals) ----------------
    def slack(self, body: bytes, headers: dict[str, str]) -> Answer:
        status_code, doc = Approvals(self.fleet).slack(body, headers)
        return _json(status_code, doc)

    def act_page(self, token: str) -> Answer:
        status_code, row, reason = Approvals(self.fleet).link(token)
        if row is None:
            return _page("message.html.j2", status_code, title="This link does not approve anything", text=reason)
        from worker.actions.catalog import KINDS

        return _page("act.html.j2", a=row, confirm=KINDS[row.kind].confirm if row.kind in KINDS else None, token=token)

    def act_post(self, token: str, body: bytes) -> Answer:
        status_code, text = Approvals(self.fleet).link_post(token, body)
        return _page("message.html.j2", status_code, title="Action", text=text)

    def delete(self, path: str) -> Answer:
        m = re.fullmatch(r"/api/silences/([0-9a-f-]{8,36})", path)
        if not m:
            return _json(404, {"error": f"cannot DELETE {path}"})
        try:
            self._expire(m.group(1), datetime.now(UTC))
        except BadRequest as exc:
            return _json(404, {"error": str(exc)})
        return _json(200, {"expired": m.group(1)})

    def _add_silence(self, data: dict[str, Any], now: datetime) -> str:
        check = str(data.get("check") or "").strip() or None
        if check is not None and check not in self.fleet.cfg.checks:
            raise BadRequest(f"check: no check {check!r}")
        labels = data.get("labels") or {}
        if isinstance(labels, str):
            labels = _parse_labels(labels)
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise BadRequest("labels: give name=value pairs")
        try:
            duration = parse_duration(str(data.get("duration") or "2h"))
        except ValueError as exc:
            raise BadRequest(f"duration: {exc}") from None
        if duration <= timedelta(0) or duration > timedelta(days=90):
            raise BadRequest("duration: between 1m and 90d")
        author = str(data.get("author") or "").strip()
        if not author:
            raise BadRequest("author: say who is silencing")
        try:
            return silences.add(self.fleet.engine, check=check, labels=labels, duration=duration,
                                comment=str(data.get("comment") or ""), author=author[:200], now=now)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None

    def _retry(self, ids: list[str] | None, all_dead: bool, channel: Any, now: datetime) -> list[recover.Retried]:
        """Requeue dead notifications (notify.sweep sends them): the ids, or all of them (of `channel`)."""
        if bool(ids) == all_dead:
            raise BadRequest("give a dead notification's id, or all of them, not both")
        routing = self.fleet.cfg.routing
        if channel is not None and (not isinstance(channel, str) or not routing or channel not in routing.channels):
            raise BadRequest(f"channel: no channel {str(channel)[:64]!r} in routing.yaml")
        try:
            with self.fleet.engine.begin() as conn:
                return recover.retry(conn, now, ids=ids, channel=channel, all_dead=all_dead)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None

    def _expire(self, given: str, now: datetime) -> None:
        try:
            silences.expire(self.fleet.engine, silences.resolve(self.fleet.engine, given, now), now)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None


API = ("status", "targets", "alerts", "alerts/<fingerprint>", "checks", "silences", "outbox", "jobs", "history", "health")
DURATIONS = ("30m", "1h", "2h", "4h", "12h", "1d", "3d", "7d")


def _retried_text(done: list[recover.Retried], cfg: Any) -> str:
    """What a retry did, in a sentence or two: requeued (sent by notify.sweep), refused and why."""
    sweep = human_duration(cfg.routing.sweep_interval.total_seconds()) if cfg.routing else "a minute"
    sent = [r for r in done if r.requeued]
    parts = [f"{len(sent)} requeued: notify.sweep sends {'it' if len(sent) == 1 else 'them'} within {sweep}."
             if sent else "Nothing requeued."]
    parts += [f"{r.id[:8]} ({r.channel}, {r.transition}) refused: {r.reason}." for r in done if not r.requeued]
    return " ".join(parts)


def _window_text(targets: list[dict[str, Any]]) -> str:
    """How long the page waits for a target's checks before it calls the target down, as words."""
    spans = sorted({t["window_s"] for t in targets if t["window_s"]})
    if not spans:
        return "twice the longest gap of its most frequent check"
    shown = ", ".join(human_duration(s) for s in spans[:3]) + (" ..." if len(spans) > 3 else "")
    return f"twice the longest gap of its most frequent check ({shown})"


def _one(query: dict[str, list[str]], key: str) -> str:
    return (query.get(key) or [""])[0].strip()


def _parse_labels(text: str) -> dict[str, str]:
    out = {}
    for part in re.split(r"[\n,]+", text):
        if not part.strip():
            continue
        if "=" not in part:
            raise BadRequest(f"labels: {part.strip()[:80]!r} is not name=value")
        k, v = part.split("=", 1)
        if not k.strip():
            raise BadRequest(f"labels: {part.strip()[:80]!r} has no name")
        out[k.strip()] = v.strip()
    return out


def _prefill(a: dict[str, Any]) -> dict[str, str]:
    return {"check": a["check"], "labels": "\n".join(f"{k}={v}" for k, v in sorted(a["labels"].items())),
            "duration": "2h", "comment": "", "author": "", "back": f"/alerts/{quote(a['fingerprint'])}"}
