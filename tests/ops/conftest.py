"""Fixtures of the tests of ops/ (the devkit's sink and demo, the sample app, Grafana and Prometheus):
none shared. test_sink.py's `sink` (with a capture file) and the seeded databases of
test_dashboards.py and test_sample_app.py are each one module's."""
