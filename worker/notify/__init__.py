"""Notifications: who is told (routing, silences), what and why (the outbox's plan), and how it is
sent (delivery through the channels, paced by the rate limits). The outbox is the one writer of
fleet.notifications and fleet.held_back; the digest is queued through it like any notification."""
