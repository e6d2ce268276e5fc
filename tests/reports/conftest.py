"""Fixtures of the tests of worker/reports/: none shared; test_reports.py's seeded app and its weekly
and monthly figures are built from the constants its tests assert on, beside them."""
