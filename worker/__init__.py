"""opsfleet worker: `celery -A worker worker|beat|call|inspect|flower` finds `worker.app`.

The Celery app is imported lazily so that `opsfleet` commands can report a bad environment as
one clear line instead of failing at import.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from worker.app import app

        return app
    raise AttributeError(name)
