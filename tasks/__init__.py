"""Celery tasks, one module per job family. Each is a thin entry point over a plain function."""
