"""The fleet watching itself: health (every dependency probed, `opsfleet health` and /health), the
heartbeat (the dead-man's switch: is the fleet well, then a ping) and metrics (the Prometheus
collector over the fleet's state)."""
