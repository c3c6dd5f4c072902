"""Real databases (a SQLite file, a private schema in the shared PostgreSQL) and real Redis
(the shared server under unique key ids, or a private redis-server the test may kill).

A missing PostgreSQL or Redis skips locally and fails under ``CI=true``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import fresh_database
from tests.support import Gateways


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from fresh_database(request.param, tmp_path, prefix="billing")


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    yield from fresh_database("postgresql", tmp_path, prefix="billing")


@pytest.fixture
def servers(tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Gateways:
    """The shared ``gateways``, started from the test's directory."""
    # A PostgreSQL gateway saves usage it cannot write in its working directory: never the repository.
    monkeypatch.chdir(tmp_path)
    gateways: Gateways = request.getfixturevalue("gateways")
    return gateways
