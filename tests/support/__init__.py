"""What test modules share, as plain modules (never a test module, never a conftest): a test module
imports its helpers from here; fixtures come from the conftest.py of its folder and the ones above it.

REPO is the repository's root, whatever folder of tests/ a module sits in.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
