"""The test suite: tests/<domain>/ per package of the code, tests/reliability/ for faults, fuzzing and
the README's promises, tests/support/ for what test modules share (plain modules, never a test module)."""

import pytest

# a support module's asserts say what they compared, as a test module's do (registered before any of
# them is imported: this package is imported first)
pytest.register_assert_rewrite("tests.support")
