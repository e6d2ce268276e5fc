"""Checks: SQL alert rules (and http / redis probes) declared in config/checks/*.yaml.

spec (the YAML models) -> collect (run the rule: samples) -> state (the pure state machine) ->
engine (one evaluation per slot, state and outbox rows in one transaction) -> store (the SQL of
check_runs, alerts, alert_events). backtest replays the same state machine and the outbox's plan.
"""
