"""Notification channels: one module per provider behind one interface (base.py: `send(message) ->
DeliveryResult` or a `DeliveryError(reason, permanent, retry_after)`), and a registry (registry.py)
that builds them from the settings. Channels know nothing of the outbox: retrying is the caller's."""
