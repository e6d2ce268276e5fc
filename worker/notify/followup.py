"""What a delivery asks to run next: the follow-up chain at a channel's rate-limit bucket, and a
retry the broker can hold. A plain function of the delivery's outcome; the task hands it `enqueue`
(notify.deliver with a countdown) and the Redis client that keeps the chain's key.

One follow-up per channel runs at the bucket's next token while rows wait to be folded (a Redis key,
`opsfleet:followup:<channel>`, set NX so a throttled storm starts one chain, not one per row); it
re-arms itself while it is throttled again or rows still wait, and frees the key when nothing waits.
A retry due within BROKER_RETRY_LIMIT goes back to the broker with its countdown; a longer one stays
in the outbox for notify.sweep.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from worker.notify.delivery import BROKER_RETRY_LIMIT, Delivery

# enqueue(kwargs of notify.deliver, countdown in seconds or None)
Enqueue = Callable[[dict[str, Any], float | None], None]


def key(channel: str | None) -> str:
    return f"opsfleet:followup:{channel}"


def after_delivery(result: Delivery, *, notification_id: str, channel: str | None, client: Any,
                   enqueue: Enqueue) -> bool:
    """Enqueue what follows `result` (the delivery of `notification_id`; `channel`: set when this run
    was itself a follow-up). Returns whether the channel's chain goes on."""
    k = key(result.channel)
    chained = False
    if result.status == "throttled" or (result.status == "retrying" and result.channel and
                                        result.error and result.error.startswith("rate_limited")):
        # One follow-up per channel at its next token; every other throttled row waits to be folded
        # into that send, instead of each task polling the bucket.
        wait = min(result.retry_in or 1.0, BROKER_RETRY_LIMIT)
        # a follow-up that is throttled again always re-arms itself; others only if none is pending
        if client is None or client.set(k, notification_id, nx=channel is None, px=int(wait * 1000) + 5000):
            enqueue({"notification_id": notification_id, "channel": result.channel}, wait)
            chained = True
    elif result.status in ("retrying", "early") and result.retry_in is not None and result.retry_in <= BROKER_RETRY_LIMIT:
        enqueue({"notification_id": notification_id}, result.retry_in)
    if result.more_waiting and result.channel and (
            channel is not None or client is None or client.set(k, notification_id, nx=True, px=10_000)):
        # rows still wait behind the bucket: the chain goes on (the next run is throttled until the
        # next token, then re-arms itself at it)
        enqueue({"notification_id": notification_id, "channel": result.channel}, None)
        chained = True
    if channel is not None and client is not None and not chained:
        client.delete(key(channel))  # the chain ends: the next throttled row starts one
    return chained
