"""The demo kit, never imported by production code (worker/, tasks/) except `opsfleet demo`, lazily:
throwaway Postgres and Redis servers, the loopback Resend + Slack sink, the fleet's processes, and
the demo itself. The tests and the benchmarks use the same pieces."""
