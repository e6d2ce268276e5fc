"""Fixtures of the tests of worker/web/: none shared; test_status_page.py's served page is built from
the check, routing and credentials its tests assert on, beside them; test_targets_overview.py's target
databases and config folder come from tests/support/targets_web.py (tests/watch/test_health.py's too)."""
