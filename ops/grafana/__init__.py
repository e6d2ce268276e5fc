"""The Grafana dashboards of ops/grafana/*.json, written by `python -m ops.grafana.build` from plain dicts."""
