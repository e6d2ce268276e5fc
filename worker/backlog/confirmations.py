"""What a recovered confirmation is: its number (derived from the registration id), its email, the
one rule that cuts pending emails into Resend batch calls with their idempotency keys, and one call
with its in-call retries."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from markupsafe import escape
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from worker.channels.base import DeliveryError
from worker.fleet.logs import get_logger

if TYPE_CHECKING:  # the channel (and Resend's SDK) is imported when a run sends: a worker starts without it
    from worker.channels.email import EmailChannel

log = get_logger(__name__)

SEND_TRIES = 4  # per provider call, same key: 1 + 3 retries
RETRY_BASE = 0.5  # seconds; doubled per retry unless the provider says Retry-After
MAX_RETRY_WAIT = 30.0


def confirmation_number(registration_id: int) -> str:
    """Deterministic per registration: a retry of the same row can never produce a second number."""
    return f"CNF-{registration_id:010d}"


NUMBER_SQL = "'CNF-' || lpad(r.id::text, greatest(10, length(r.id::text)), '0')"  # same as confirmation_number()


# -- arguments (celery call sends kwargs unchecked) --------------------------------------------------

class ProviderUnavailable(Exception):
    """The provider kept failing (transient errors past the retries, or auth/URL errors): stop the run;
    the emails stay pending and the next run resends them with the same keys."""


# -- rendering and sending -------------------------------------------------------------------------------

class EmailRow(NamedTuple):
    """One pending confirmation email with what its message needs (the SELECTs list these in this order)."""

    email_id: int
    registration_id: int
    recipient: str
    subject: str
    attempts: int
    grp: str  # xmin of the pending row: the transaction that made it pending
    full_name: str
    confirmation_number: str
    event_id: int
    amount_in_cents: int


def render_confirmation(row: EmailRow) -> dict[str, Any]:
    """Resend params for one confirmation (no `from`). Deterministic: a resend is byte-identical."""
    amount = f"{row.amount_in_cents / 100:.2f}"
    text = (f"Hello {row.full_name},\n\nyour registration is confirmed.\n\n"
            f"Confirmation number: {row.confirmation_number}\nEvent: {row.event_id}\nAmount paid: {amount}\n\n"
            "Please keep this email: you will be asked for the confirmation number.\n")
    html = (f'<!doctype html><html><body style="font-family:sans-serif;color:#111">'
            f"<p>Hello {escape(row.full_name)},</p><p>your registration is confirmed.</p>"
            f"<table><tr><td>Confirmation number</td><td><strong>{escape(row.confirmation_number)}</strong></td></tr>"
            f"<tr><td>Event</td><td>{row.event_id}</td></tr><tr><td>Amount paid</td><td>{amount}</td></tr></table>"
            "<p>Please keep this email: you will be asked for the confirmation number.</p></body></html>")
    return {"to": [row.recipient], "subject": row.subject, "html": html, "text": text,
            "tags": [{"name": "category", "value": "confirmation"},
                     {"name": "registration_id", "value": str(row.registration_id)}]}


def provider_calls(rows: Iterable[EmailRow]) -> list[list[EmailRow]]:
    """The one rule that cuts pending rows into provider calls: per group, by registration id, 100 each.

    Rows only leave a group a whole call at a time, so the calls of what is left are unchanged."""
    from worker.channels.email import MAX_BATCH

    groups: dict[str, list[EmailRow]] = {}
    for r in rows:
        groups.setdefault(r.grp, []).append(r)
    calls = []
    for grp in sorted(groups, key=lambda g: min(r.email_id for r in groups[g])):
        members = sorted(groups[grp], key=lambda r: (r.registration_id, r.email_id))
        calls += [members[i:i + MAX_BATCH] for i in range(0, len(members), MAX_BATCH)]
    return calls


def idempotency_key(call: Sequence[EmailRow]) -> str:
    ids = ",".join(f"{r.registration_id}.{r.attempts}" for r in call)
    return "confirmations/" + hashlib.sha256(ids.encode()).hexdigest()[:48]


@dataclass(frozen=True)
class Outcome:
    email_id: int
    status: str  # sent | failed
    provider_id: str | None
    error: str | None


def send_call(channel: EmailChannel, call: Sequence[EmailRow], *,
              sleep: Callable[[float], None] = time.sleep) -> list[Outcome]:
    """One Resend batch call (permissive validation: a bad address fails alone), retried a few times
    with the same key on transient errors. Raises ProviderUnavailable when retrying does not help."""
    batch = [render_confirmation(r) for r in call]
    key = idempotency_key(call)

    def wait(state: RetryCallState) -> float:  # the provider's Retry-After, else exponential
        exc = state.outcome.exception() if state.outcome else None
        after = getattr(exc, "retry_after", None)
        return min(after if after is not None else RETRY_BASE * 2 ** (state.attempt_number - 1), MAX_RETRY_WAIT)

    retrying = Retrying(
        retry=retry_if_exception(lambda e: isinstance(e, DeliveryError) and not e.permanent),
        stop=stop_after_attempt(SEND_TRIES), wait=wait, sleep=sleep, reraise=True,
        before_sleep=lambda state: log.warning("confirmation_send_retrying", reason=state.outcome.exception().reason,
                                               wait_s=state.upcoming_sleep, key=key),
    )
    try:
        items = retrying(channel.send_batch_each, batch, key)
    except DeliveryError as exc:
        if exc.permanent and exc.reason == "invalid":  # the provider rejected the payload: nothing sent
            return [Outcome(r.email_id, "failed", None, f"{exc.status or ''} {exc.message}".strip()[:500])
                    for r in call]
        if exc.permanent and exc.status == 409:  # the key is known with another body: the data changed
            note = ("the provider holds this key with a different email (the registration changed since the "
                    "first attempt), so that attempt was probably delivered: check before resending")
            return [Outcome(r.email_id, "failed", None, f"409 {exc.message}: {note}"[:500]) for r in call]
        if exc.permanent:  # auth, wrong URL: not the emails' fault
            raise ProviderUnavailable(f"Resend: {exc.reason}: {exc.message}") from exc
        raise ProviderUnavailable(f"Resend kept failing ({exc.reason}): {exc.message}") from exc
    return [Outcome(r.email_id, "sent", item.provider_id, None) if item.provider_id
            else Outcome(r.email_id, "failed", None, (item.error or "rejected")[:500]) for r, item in zip(call, items, strict=True)]


# -- SQL ----------------------------------------------------------------------------------------------

def confirmation_channel(settings: Any) -> EmailChannel:
    """Confirmation emails go out as FROM_NAME <FROM_EMAIL> through RESEND_API_URL with RESEND_API_KEY
    (`settings`: worker.fleet.settings.Settings)."""
    from worker.channels.email import EmailChannel

    return EmailChannel(settings.resend_api_key, settings.from_email, settings.from_name, [],
                        api_url=settings.resend_api_url)


def require_channel(channel: EmailChannel | None) -> None:
    if channel is None or not channel.api_key:
        raise ValueError("RESEND_API_KEY is not set: confirmation emails cannot be sent (a dry run needs no key)")
    if not channel.from_email:
        raise ValueError("FROM_EMAIL is not set: confirmation emails need a sender")
