"""Fixtures shared by the MCP tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.mcp.mcp_helpers import HttpServer, start_http_server


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    server = start_http_server(tmp_path_factory.mktemp("http-markers"))
    yield server
    server.stop()
