"""Token buckets in Redis, one per provider target, shared by every worker.

Each channel class names its default rate (`rate_limit`, worker/channels/), just under the
providers' documented limits (Resend: 2 requests per second per team;
Slack: about 1 message per second per incoming webhook / channel): a bucket at exactly the limit
meets the provider's 429 whenever scheduling jitter puts two requests inside one of its windows
(bench/RESULTS.md, Notifications).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import redis

# The buckets' clock is the Redis server's (TIME), shared by every worker whatever its host's clock
# says (tests/reliability/test_clock_skew.py); a test passes its own as now >= 0.
_NOW = """
local now = tonumber(ARGV[3])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""
# KEYS[1] bucket; ARGV rate, burst, now(ms, or -1: Redis's). Returns ms to wait (0 = token taken).
_TAKE = _NOW + """
local rate = tonumber(ARGV[1]) / 1000.0
local burst = tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000)
return wait
"""
# KEYS bucket, wire bucket; ARGV rate, burst, now(ms, or -1), seconds without a token for anyone.
_PENALIZE = _NOW + """
local rate = tonumber(ARGV[1])
local seconds = tonumber(ARGV[4])
for _, key in ipairs(KEYS) do
  redis.call('HSET', key, 'tokens', 1 - seconds * rate, 'ts', now)
  redis.call('PEXPIRE', key, math.ceil((seconds + tonumber(ARGV[2]) / rate) * 1000) + 1000)
end
return 0
"""


class TokenBucket:
    """Two buckets of the same rate and burst per target. `take()` (admission) decides whether a
    notification is sent now or waits (throttled, to be folded); `wait_turn()`, right before the
    provider call, decides when the request leaves: whatever happens between the two (folding the
    rows that wait, rendering, a slow database) cannot put two requests closer than the provider
    allows. The time is the Redis server's, shared by every worker; `clock` (seconds since the epoch)
    replaces it in tests."""

    def __init__(self, client: redis.Redis, target: str, rate: float, burst: int,
                 clock: Callable[[], float] | None = None) -> None:
        self.client = client
        self.clock = clock
        self.key = "opsfleet:bucket:" + hashlib.sha256(target.encode()).hexdigest()[:16]
        self.wire_key = self.key + ":wire"
        self.rate, self.burst = rate, burst
        self._take = client.register_script(_TAKE)
        self._penalize = client.register_script(_PENALIZE)

    def _now_ms(self) -> int:
        return -1 if self.clock is None else int(self.clock() * 1000)

    def penalize(self, seconds: float) -> None:
        """The provider said 429 with Retry-After: no token for anyone until it has passed."""
        self._penalize(keys=[self.key, self.wire_key], args=[self.rate, self.burst, self._now_ms(), seconds])

    def take(self) -> float:
        """Take one token; return 0.0, or the seconds to wait before one is available."""
        wait_ms = self._take(keys=[self.key], args=[self.rate, self.burst, self._now_ms()])
        return int(wait_ms) / 1000.0

    def wait_turn(self, max_wait: float = 5.0, sleep=time.sleep) -> float:
        """Take a token of the wire bucket, sleeping until there is one (at most `max_wait` s, then go
        anyway: a 429 is handled). Returns the seconds slept."""
        slept = 0.0
        while True:
            wait_ms = int(self._take(keys=[self.wire_key], args=[self.rate, self.burst, self._now_ms()]))
            if wait_ms == 0 or slept >= max_wait:
                return slept
            pause = min(wait_ms / 1000.0, max_wait - slept)
            sleep(pause)
            slept += pause
