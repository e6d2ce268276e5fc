"""Seed 004 (ticketing): shows, show_seats, seat_reservations, reservation_seats,
seat_reservation_audit_log, ticket_orders, tickets, reservation_cleanup_runs."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from ops.sample_app.seed.common import DAY, DOUBLE_BOOKING_ERROR, HISTORY, Put, Row, ages, clamp

SCHEMA = ("004_ticketing.sql",)  # the schema files its database needs
TABLES = ("shows", "show_seats", "seat_reservations", "reservation_seats", "seat_reservation_audit_log",
          "ticket_orders", "tickets", "reservation_cleanup_runs")  # what write() fills

SEATS_PER_ROW = 20
_SECTIONS = (("ORCH", 8900), ("MEZZ", 6500), ("BALC", 3900))
_TITLES = ("Hamlet", "The Magic Flute", "Swan Lake", "Jazz at Midnight", "La Traviata", "Stand-up Gala")
_VENUES = ("Grand Theatre", "Riverside Hall", "Opera House")
_PAYMENT_FAILURES = ("card_declined", "insufficient_funds", "payment_intent_authentication_failure")
_RACE_ERROR = "Seat(s) taken by another session"
_LIVE_DONE, _LIVE_ACTIVE, _STALE = 6, 8, 12


@dataclass(frozen=True, slots=True)
class _Reservation:
    id: int
    show: int         # 0-based show index
    first_seat: int   # 0-based seat index within the show
    seats: int
    session_id: str
    created: datetime
    expires: datetime
    outcome: str      # completed | expired | active | stale (still active past expires_at)
    ended: datetime | None
    extended: bool
    order: str | None  # paid | failed | pending | refunded
    order_created: datetime | None
    race_lost: bool    # a 'failed' attempt (seat taken) just before this reservation


def _ticket_counts(scale: int) -> tuple[int, int, int]:
    n_res = clamp(scale // 10, 200, 100_000)
    day = clamp(n_res // 20, 80, 5000)
    day -= day % 20
    return n_res, day, clamp(n_res // 250, 4, 400)


def _reservations(scale: int, now: datetime, rng_seed: int) -> Iterator[_Reservation]:
    """The reservation plan, in creation order; deterministic, so each ticketing table replays it."""
    rng = random.Random(f"{rng_seed}:tickets")
    n_res, n_day, n_shows = _ticket_counts(scale)
    n_history = n_res - n_day - _LIVE_DONE - _LIVE_ACTIVE - _STALE
    used = [0] * n_shows
    rid = 0

    def make(created: datetime, outcome: str, *, extended: bool = False, order: str | None = None,
             race_lost: bool = False, completes_in: float = 0.0) -> _Reservation:
        nonlocal rid
        rid += 1
        show = rng.randrange(n_shows)
        r = rng.random()
        seats = 1 if r < 0.3 else 2 if r < 0.75 else 3 if r < 0.9 else 4
        first = used[show]
        used[show] += seats
        expires = created + timedelta(seconds=900 if extended else 600)
        ended = order_created = None
        if outcome == "completed":
            ended = created + timedelta(seconds=completes_in or rng.uniform(90, 540))
            order_created = ended - timedelta(seconds=rng.uniform(20, 80))
        elif outcome == "expired":
            ended = expires + timedelta(seconds=rng.uniform(1, 60))
            if order:
                order_created = created + timedelta(seconds=rng.uniform(120, 500))
        elif order:
            order_created = min(created + timedelta(seconds=60), now - timedelta(seconds=5))
        return _Reservation(rid, show, first, seats, f"sess_{rng.getrandbits(40):010x}", created, expires,
                            outcome, ended, extended, order, order_created, race_lost)

    for age in ages(rng, n_history, DAY + 60, HISTORY, growth=1.5):
        created = now - timedelta(seconds=age)
        completed = rng.random() < 0.58
        order = ("refunded" if rng.random() < 0.01 else "paid") if completed else \
            "failed" if rng.random() < 0.03 else None
        yield make(created, "completed" if completed else "expired", extended=rng.random() < 0.08, order=order,
                   race_lost=rng.random() < 0.02)
    # The last 24 h (up to 45 min ago): 11/20 completed, 1/20 expired after a failed payment, 8/20
    # expired unpaid -> 1 failed order per 12 (8.3%).
    for j, age in enumerate(ages(rng, n_day, 45 * 60, DAY)):
        k = j % 20
        yield make(now - timedelta(seconds=age), "completed" if k < 11 else "expired", extended=j % 10 == 3,
                   order="paid" if k < 11 else "failed" if k == 11 else None, race_lost=j % 50 == 17)
    for age in ages(rng, _LIVE_DONE, 15 * 60, 44 * 60):
        yield make(now - timedelta(seconds=age), "completed", order="paid", completes_in=rng.uniform(180, 480))
    for age in ages(rng, _STALE, 120, 24 * 60):
        yield make(now - timedelta(seconds=age + 600), "stale")
    for j, age in enumerate(ages(rng, _LIVE_ACTIVE, 20, 540)):
        yield make(now - timedelta(seconds=age), "active", order="pending" if j % 2 == 0 else None)


@dataclass(frozen=True)
class _TicketLayout:
    reservations: int
    shows: int
    seats_per_show: int
    reservation_seats: int
    audit: int
    orders: int
    tickets: int

    def seat_id(self, show: int, seat: int) -> int:
        return show * self.seats_per_show + seat + 1


def ticket_layout(scale: int, now: datetime, rng_seed: int) -> _TicketLayout:
    n_res, _, n_shows = _ticket_counts(scale)
    used = [0] * n_shows
    seats = audit = orders = tickets = 0
    for r in _reservations(scale, now, rng_seed):
        used[r.show] = r.first_seat + r.seats
        seats += r.seats
        audit += 1 + r.race_lost + r.extended + (r.ended is not None)
        orders += r.order is not None
        tickets += r.seats if r.order == "paid" else 0
    per_show = math.ceil(max(used) * 1.15 / SEATS_PER_ROW + 1) * SEATS_PER_ROW
    return _TicketLayout(n_res, n_shows, per_show, seats, audit + 1, orders, tickets)


def _seat_label(seat: int) -> tuple[str, str, int, int]:
    row = seat // SEATS_PER_ROW
    section, price = _SECTIONS[min(row // 10, len(_SECTIONS) - 1)]
    return section, f"R{row + 1}", seat % SEATS_PER_ROW + 1, price


def shows(layout: _TicketLayout, now: datetime) -> Iterator[Row]:
    for s in range(layout.shows):
        title = f"{_TITLES[s % len(_TITLES)]} #{s // len(_TITLES) + 1}"
        starts = now + timedelta(days=round(-100 + 160 * s / layout.shows), hours=19.5)
        yield (s + 1, title, _VENUES[s % len(_VENUES)], starts, now - timedelta(days=121))


_SEAT_STATUS = {"completed": "sold", "active": "reserved", "stale": "reserved", "expired": "available"}


def show_seats(scale: int, now: datetime, rng_seed: int, layout: _TicketLayout) -> Iterator[Row]:
    used = [0] * layout.shows
    for r in _reservations(scale, now, rng_seed):
        used[r.show] = r.first_seat + r.seats
        status = _SEAT_STATUS[r.outcome]
        for seat in range(r.first_seat, r.first_seat + r.seats):
            yield (layout.seat_id(r.show, seat), r.show + 1, *_seat_label(seat), status, r.ended or r.created)
    opened = now - timedelta(days=121)
    for show in range(layout.shows):
        for seat in range(used[show], layout.seats_per_show):
            yield (layout.seat_id(show, seat), show + 1, *_seat_label(seat), "available", opened)


def seat_reservations(scale: int, now: datetime, rng_seed: int) -> Iterator[Row]:
    for r in _reservations(scale, now, rng_seed):
        yield (r.id, r.show + 1, r.session_id, r.outcome in ("active", "stale"), r.expires,
               r.ended if r.outcome == "completed" else None, r.created, r.ended or r.created)


def reservation_seats(scale: int, now: datetime, rng_seed: int, layout: _TicketLayout) -> Iterator[Row]:
    for r in _reservations(scale, now, rng_seed):
        released = r.ended if r.outcome == "expired" else None
        for seat in range(r.first_seat, r.first_seat + r.seats):
            yield (r.id, layout.seat_id(r.show, seat), r.created, released)


def audit_log(scale: int, now: datetime, rng_seed: int, layout: _TicketLayout) -> Iterator[Row]:
    aid = 0
    double_booked: list[int] = []
    for r in _reservations(scale, now, rng_seed):
        seats = [layout.seat_id(r.show, s) for s in range(r.first_seat, r.first_seat + r.seats)]
        events: list[tuple] = []
        if r.race_lost:
            events.append((None, "failed", _RACE_ERROR, r.created - timedelta(seconds=3)))
        events.append((r.id, "created", None, r.created))
        if r.extended:
            events.append((r.id, "extended", None, r.created + timedelta(seconds=480)))
        if r.ended:
            events.append((r.id, r.outcome, None, r.ended))
        for reservation_id, event, error, at in events:
            aid += 1
            yield (aid, reservation_id, r.show + 1, r.session_id, event, seats, error, at)
        if r.outcome == "active" and not double_booked:
            double_booked = [r.show + 1, *seats]
    aid += 1
    yield (aid, None, double_booked[0], "sess_00doublebk", "failed", double_booked[1:], DOUBLE_BOOKING_ERROR,
           now - timedelta(minutes=2))


def ticket_orders(scale: int, now: datetime, rng_seed: int) -> Iterator[Row]:
    oid = 0
    for r in _reservations(scale, now, rng_seed):
        if r.order is None:
            continue
        oid += 1
        total = sum(_seat_label(s)[3] for s in range(r.first_seat, r.first_seat + r.seats))
        failure = _PAYMENT_FAILURES[r.id % 3] if r.order == "failed" else None
        updated = r.ended if r.order in ("paid", "refunded") else r.order_created + timedelta(seconds=4)
        yield (oid, r.id, r.show + 1, f"buyer{r.id}@example.com", r.order, total, f"pi_t{r.id:010d}", failure,
               r.order_created, updated)


def tickets(scale: int, now: datetime, rng_seed: int, layout: _TicketLayout) -> Iterator[Row]:
    oid = tid = 0
    for r in _reservations(scale, now, rng_seed):
        if r.order is None:
            continue
        oid += 1
        if r.order != "paid":
            continue
        for seat in range(r.first_seat, r.first_seat + r.seats):
            tid += 1
            yield (tid, oid, r.show + 1, layout.seat_id(r.show, seat), f"TKT-{tid:010d}", r.ended)


CLEANUP_COLUMNS = ("start_time", "end_time", "status", "expired_count", "error_message")


def cleanup_runs(now: datetime, rng_seed: int) -> list[Row]:
    """Every 5 min for a day, until the run 25 min ago failed on a statement timeout; none since."""
    rng = random.Random(f"{rng_seed}:cleanup")
    rows = []
    for minutes in range(24 * 60, 25, -5):
        start = now - timedelta(minutes=minutes, seconds=-rng.uniform(0, 2))
        rows.append((start, start + timedelta(seconds=rng.uniform(0.04, 0.9)), "succeeded", rng.randrange(0, 6), None))
    start = now - timedelta(minutes=25)
    rows.append((start, start + timedelta(seconds=32.4), "failed", 0, "canceling statement due to statement timeout"))
    return rows


def write(put: Put, scale: int, now: datetime, seed_: int) -> None:
    """Write this system's tables through `put` (the COPY of seed())."""
    layout = ticket_layout(scale, now, seed_)
    put("shows", ("id", "title", "venue", "starts_at", "created_at"), shows(layout, now), layout.shows)
    put("show_seats", ("id", "show_id", "section", "row_label", "seat_number", "price_in_cents", "status", "updated_at"),
        show_seats(scale, now, seed_, layout), layout.shows * layout.seats_per_show)
    put("seat_reservations", ("id", "show_id", "session_id", "is_active", "expires_at", "completed_at", "created_at",
                              "updated_at"), seat_reservations(scale, now, seed_), layout.reservations)
    put("reservation_seats", ("reservation_id", "seat_id", "created_at", "released_at"),
        reservation_seats(scale, now, seed_, layout), layout.reservation_seats)
    put("seat_reservation_audit_log", ("id", "reservation_id", "show_id", "session_id", "event_type", "seat_ids",
                                       "error_message", "created_at"), audit_log(scale, now, seed_, layout), layout.audit)
    put("ticket_orders", ("id", "reservation_id", "show_id", "customer_email", "status", "total_amount_in_cents",
                          "payment_intent_id", "failure_reason", "created_at", "updated_at"),
        ticket_orders(scale, now, seed_), layout.orders)
    put("tickets", ("id", "order_id", "show_id", "seat_id", "ticket_code", "created_at"),
        tickets(scale, now, seed_, layout), layout.tickets)
    put("reservation_cleanup_runs", CLEANUP_COLUMNS, cleanup_runs(now, seed_))
