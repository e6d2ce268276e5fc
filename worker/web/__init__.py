"""`opsfleet serve`: the fleet over HTTP (health endpoints, metrics)."""
