"""Reliability: real faults injected, fuzzed inputs, the README's promises proven (`pytest -m reliability`)."""
