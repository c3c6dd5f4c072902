"""Fixtures for the WhatsApp tests: a real database (SQLite file and PostgreSQL), the
fake Graph API, signed webhook deliveries, and settings tying them together."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import select

from runtime.api.app import create_app
from runtime.config import Settings, settings_from_dict
from runtime.gateway import Gateway
from tests.fakes.graph_api import FakeGraphAPI
from tests.fakes.openai_server import FakeOpenAI
from tests.services import fresh_database
from workers.whatsapp.models import WHATSAPP_TABLES
from workers.whatsapp.payloads import SIGNATURE_HEADER, encode, sign
from workers.whatsapp.webhook import router as whatsapp_router

REPO = Path(__file__).resolve().parents[2]
APP_SECRET = "test-app-secret-7f3a"
VERIFY_TOKEN = "verify-me-please"
SUPPORT_NUMBER = "106540352242922"
SALES_NUMBER = "106540352242999"
OTHER_SECRET_NUMBER = "106540352200000"
TOKENS = {SUPPORT_NUMBER: "EAAG-support", SALES_NUMBER: "EAAG-sales", OTHER_SECRET_NUMBER: "EAAG-x"}

@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A fresh database per test: a SQLite file, or a private schema in the shared PostgreSQL."""
    yield from fresh_database(request.param, Path(tmp_path), prefix="wa_test")


@pytest.fixture(scope="session")
def graph_api() -> Iterator[FakeGraphAPI]:
    server = FakeGraphAPI(tokens=TOKENS).start()
    yield server
    server.stop()


@pytest.fixture
def graph(graph_api: FakeGraphAPI) -> FakeGraphAPI:
    graph_api.sends.clear()
    graph_api.reads.clear()
    graph_api.rejected.clear()
    graph_api._failures.clear()
    return graph_api


def settings_dict(
    database_url: str, graph_base: str, upstream_base: str, **whatsapp: Any
) -> dict[str, Any]:
    return {
        "database_url": database_url,
        "providers": [
            {"id": "up", "kind": "openai", "base_url": upstream_base, "api_key": "sk-test", "max_retries": 0}
        ],
        "models": [{"id": "gpt-test", "provider": "up"}],
        "organisations": [
            {"id": "acme", "plugins": [{"id": "clock"}, {"id": "calculator"}]},
        ],
        "whatsapp": {
            "graph_api_base": graph_base,
            "apps": [
                {
                    "id": "acme-support",
                    "organisation": "acme",
                    "phone_number_id": SUPPORT_NUMBER,
                    "access_token": TOKENS[SUPPORT_NUMBER],
                    "app_secret": APP_SECRET,
                    "verify_token": VERIFY_TOKEN,
                    "model": "gpt-test",
                    "system_prompt": "You are Acme's support assistant.",
                    "enabled_plugin_ids": ["calculator"],
                },
                {
                    "id": "acme-sales",
                    "organisation": "acme",
                    "phone_number_id": SALES_NUMBER,
                    "access_token": TOKENS[SALES_NUMBER],
                    "app_secret": APP_SECRET,
                    "verify_token": VERIFY_TOKEN,
                    "model": "gpt-test",
                    "enabled_plugin_ids": [],
                },
                {
                    "id": "other-meta-app",
                    "organisation": "acme",
                    "phone_number_id": OTHER_SECRET_NUMBER,
                    "access_token": TOKENS[OTHER_SECRET_NUMBER],
                    "app_secret": "a-different-meta-app-secret",
                    "verify_token": "another-token",
                    "model": "gpt-test",
                },
            ],
            "poll_interval_s": 0.05,
            "lease_s": 5.0,
            **whatsapp,
        },
    }


def answer_through_endpoint(raw: dict[str, Any], slug: str) -> None:
    """Point the first WhatsApp app of ``settings_dict``'s configuration at an endpoint instead of its own model."""
    app = raw["whatsapp"]["apps"][0]
    for name in ("model", "system_prompt", "enabled_plugin_ids"):
        app.pop(name, None)
    app["endpoint"] = slug


@pytest.fixture
def make_settings(database_url: str, graph: FakeGraphAPI) -> Callable[..., Settings]:
    def build(upstream_base: str = "http://127.0.0.1:9/v1", **whatsapp: Any) -> Settings:
        return settings_from_dict(settings_dict(database_url, graph.base_url, upstream_base, **whatsapp))

    return build


def signed(payload: dict[str, Any], secret: str = APP_SECRET) -> tuple[bytes, dict[str, str]]:
    body = encode(payload)
    return body, {"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body)}


async def wait_for(
    predicate: Callable[[], Awaitable[bool]] | Callable[[], bool],
    *,
    timeout_s: float = 15.0,
    interval_s: float = 0.02,
    what: str = "condition",
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)


# --- the upstream model and a served gateway ---------------------------------


@pytest.fixture(scope="session")
def openai_server() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(api_key="sk-test").start()
    yield server
    server.stop()


@pytest.fixture
def upstream(openai_server: FakeOpenAI) -> FakeOpenAI:
    openai_server.reset()
    return openai_server


@dataclass
class Served:
    settings: Settings
    gateway: Gateway
    app: FastAPI
    base_url: str
    client: httpx.AsyncClient

    async def post_delivery(self, payload: dict[str, Any], *, secret: str = APP_SECRET) -> httpx.Response:
        body, headers = signed(payload, secret)
        return await self.client.post("/webhooks/whatsapp", content=body, headers=headers)


def build_app(settings: Settings, gateway: Gateway) -> FastAPI:
    app = create_app(settings, gateway=gateway)
    if not any(getattr(route, "path", None) == "/webhooks/whatsapp" for route in app.routes):
        app.include_router(whatsapp_router)  # until create_app includes it itself
    return app


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Settings], Awaitable[Served]]]:
    """Start the real app on a free port (uvicorn in this event loop) with a real Gateway."""
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def start(settings: Settings) -> Served:
        gateway = await Gateway.create(settings)
        app = build_app(settings, gateway)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        await wait_for(lambda: server.started, timeout_s=10, what="uvicorn start")
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)

        async def stop() -> None:
            await client.aclose()
            server.should_exit = True
            await task
            await gateway.aclose()

        cleanups.append(stop)
        return Served(settings, gateway, app, f"http://127.0.0.1:{port}", client)

    yield start
    for cleanup in reversed(cleanups):
        await cleanup()


def _rows(gateway: Gateway, table: Any) -> list[Any]:
    with gateway.engine.connect() as conn:
        return list(conn.execute(select(table).order_by(table.c.id)).all())


def inbound_rows(gateway: Gateway) -> list[Any]:
    return _rows(gateway, WHATSAPP_TABLES[0])


def outbound_rows(gateway: Gateway) -> list[Any]:
    return _rows(gateway, WHATSAPP_TABLES[1])


def status_rows(gateway: Gateway) -> list[Any]:
    return _rows(gateway, WHATSAPP_TABLES[2])


def start_worker_process(config: Path) -> subprocess.Popen[bytes]:
    """``python -m workers.whatsapp``: the same ``run_worker`` as ``plugway worker``."""
    return subprocess.Popen(
        [sys.executable, "-m", "workers.whatsapp", "--config", str(config)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
