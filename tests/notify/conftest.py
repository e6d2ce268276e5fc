"""Fixtures of the tests of worker/notify/. Their two main ones are shared with tests/reliability/ and
so live in tests/support/notify.py (registered by the root conftest): `db`, the fleet database with
the gauge the notify tests fire their check on, and `setup`, real workers' config, sink, environment
and Celery client. Their helpers (check, fire, note, routing, settings_for) are there too.
test_notify.py's `redis_client` (rate-limit buckets only) and test_plan.py's module-wide `fleet` are
each one module's."""
