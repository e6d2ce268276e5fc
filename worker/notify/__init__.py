"""Notifications: who is told (routing), what a transition sends and why (plan: the pure policy),
what holds a notice back (holds: silences and inhibition, read-only), the table (outbox: the one
writer of fleet.notifications and fleet.held_back), and how a row is sent (delivery's stages, paced
by the rate limits, then the follow-up chain). The digest is queued through the outbox like any
notification."""
