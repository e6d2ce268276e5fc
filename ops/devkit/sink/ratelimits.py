"""Optional rate limits on the sink, as the providers enforce them: a token bucket per provider target
(Resend: per API key; Slack: per webhook URL or per Web API channel), a 429 with Retry-After over it."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

from ops.devkit.sink.base import RecordedRequest, Response
from ops.devkit.sink.replies import default_error
from ops.devkit.sink.slack import slack_channel_of

RATE_LIMITED_PROVIDERS = ("resend", "slack")




def parse_rate_limits(
    limits: Mapping[str, float | tuple[float, int]] | None,
) -> dict[str, tuple[float, int]]:
    out: dict[str, tuple[float, int]] = {}
    for provider, value in (limits or {}).items():
        if provider not in RATE_LIMITED_PROVIDERS:
            raise ValueError(f"rate_limits: unknown provider {provider!r}; known: {', '.join(RATE_LIMITED_PROVIDERS)}")
        rate, burst = (value if isinstance(value, tuple | list) else (value, None))
        rate = float(rate)
        burst = max(1, int(rate)) if burst is None else int(burst)
        if not rate > 0 or burst < 1:
            raise ValueError(f"rate_limits[{provider!r}]: the rate must be > 0 and the burst >= 1")
        out[provider] = (rate, burst)
    return out



class RateLimits:
    """ProviderSink's rate limiting (a mixin: the buckets live on the sink)."""

    def _rate_limit(self, rec: RecordedRequest, raw: bytes, token: str | None) -> Response | None:
        """Take a token from the request's provider-target bucket; a 429 when there is none."""
        route = rec.route
        if not self.rate_limits or route is None or route == "slack.auth.test":
            return None
        provider = route.split(".", 1)[0]
        limit = self.rate_limits.get(provider)
        if limit is None:
            return None
        rate, burst = limit
        if provider == "resend":
            target = token or ""
        elif route == "slack.webhook":
            target = rec.path
        else:
            target = "api:" + slack_channel_of(rec.headers, raw)
        now = time.monotonic()
        tokens, at = self._buckets.get((provider, target), (float(burst), now))
        tokens = min(float(burst), tokens + (now - at) * rate)
        if tokens >= 1.0:
            self._buckets[(provider, target)] = [tokens - 1.0, now]
            return None
        self._buckets[(provider, target)] = [tokens, now]
        rec.rate_limited = True
        retry_after = str(max(1, math.ceil((1.0 - tokens) / rate)))  # whole seconds, as both providers send
        resp = default_error(route, 429)
        resp.headers["Retry-After"] = retry_after
        if provider == "resend":
            resp.headers.update(
                {"ratelimit-limit": f"{rate:g}", "ratelimit-remaining": "0", "ratelimit-reset": retry_after}
            )
        return resp
