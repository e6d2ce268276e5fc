"""What every table's generator shares: the time span, the planted names, deterministic counts and ages, people."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator

Progress = Callable[[str, int, int], None]
Put = Callable[..., None]  # put(table, columns, rows, total=None): one table through COPY
Row = tuple

MIN_SCALE = 100
DAY = 86_400.0
HOUR = 3_600.0
HISTORY = 120 * DAY

FAILING_WEBHOOK = "generate-confirmation"
WEBHOOKS = ("registration-payment-webhook", FAILING_WEBHOOK, "send-confirmation-email", "resend-webhook", "stripe-webhook")
WEBHOOK_WEIGHTS = (0.26, 0.26, 0.26, 0.14, 0.08)
STALE_WHATSAPP_SESSION = "wa-backup-02"
DOUBLE_BOOKING_ERROR = 'duplicate key value violates unique constraint "reservation_seats_active_seat_key"'

_FIRST = ("Ana", "Ben", "Chloe", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kemi", "Liam",
          "Maya", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sven", "Tara", "Uma", "Victor", "Wen", "Yusuf")
_LAST = ("Almeida", "Brown", "Chen", "Dubois", "Evans", "Fischer", "Garcia", "Haddad", "Ivanova", "Jensen",
         "Kowalski", "Lopez", "Muller", "Nakamura", "Okafor", "Patel", "Rossi", "Silva", "Tanaka", "Weber")
_DOMAINS = ("example.com", "mail.example", "example.org", "inbox.example.net")
PRICES = (2500, 4500, 4500, 7500, 12000, 19900)



def clamp(x: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, x))


def marked(j: int, rate: float) -> bool:
    """Exactly floor(n * rate) of j = 0..n-1 are marked, spread evenly (deterministic counts)."""
    return math.floor((j + 1) * rate) > math.floor(j * rate)


def ages(rng: random.Random, n: int, newest: float, oldest: float, growth: float = 0.0) -> Iterator[float]:
    """n ages in seconds, oldest first, stratified (so sorted with no list); growth > 0 makes recent
    times denser (density at `newest` is 1 + growth times that at `oldest`)."""
    span = oldest - newest
    a = 2 * growth * (1 + growth / 2)
    for i in range(n):
        u = (i + rng.random()) / n
        t = (math.sqrt(1 + a * u) - 1) / growth if growth else u
        yield newest + (1 - t) * span


def person(customer_id: int) -> tuple[str, str]:
    first = _FIRST[customer_id % len(_FIRST)]
    last = _LAST[(customer_id // len(_FIRST)) % len(_LAST)]
    email = f"{first.lower()}.{last.lower()}{customer_id}@{_DOMAINS[customer_id % len(_DOMAINS)]}"
    return email, f"{first} {last}"
