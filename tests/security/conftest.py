"""Everything under tests/security is the security suite: `make test-security` selects it by the
`security` marker, and `make test` leaves it out so CI does not run it twice."""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.security)
