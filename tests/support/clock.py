"""A clock a test advances by hand."""

from __future__ import annotations


class Clock:
    """An injectable clock (seconds since the epoch, e.g. the rate-limit buckets'), advanced by hand
    instead of sleeping until time has passed."""

    def __init__(self) -> None:
        import time

        self.t = time.time()

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
