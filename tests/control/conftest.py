"""The management API's harness: a gateway on SQLite and on PostgreSQL, and an admin client for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runtime.storage.keys import mint_admin_key
from tests.services import fresh_database
from tests.support import Gateways, GatewayServer

ORGS: list[dict[str, Any]] = [
    {"id": "shop", "plugins": [{"id": "calculator"}], "endpoints": [{"slug": "yaml-helper", "model": "gpt-test", "plugins": []}]},
]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from fresh_database(request.param, tmp_path, prefix="control")


@pytest.fixture
def server(database_url: str, gateways: Gateways) -> GatewayServer:
    return gateways.start(database_url=database_url, extra_orgs=ORGS, key_cache_ttl_s=0)


class Admin:
    def __init__(self, server: GatewayServer) -> None:
        self.server = server
        self.key, self.row = mint_admin_key(server.gateway.engine, name="ops")
        self.client = httpx.Client(base_url=f"{server.url}/admin/v1", headers={"Authorization": f"Bearer {self.key}"}, timeout=20)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


@pytest.fixture
def admin(server: GatewayServer) -> Iterator[Admin]:
    admin = Admin(server)
    yield admin
    admin.client.close()
