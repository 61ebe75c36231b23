"""Everything under tests/security is the security suite: `make test-security` selects it by the
`security` marker, and `make test` leaves it out so CI does not run it twice."""

from __future__ import annotations

from pathlib import Path

import pytest

# The live `make run` stack of the e2e suite (a session fixture), for the probes through the
# gateway (test_tenancy_live.py, test_rate_limits.py...).
from tests.e2e.conftest import stack  # noqa: F401

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.security)
