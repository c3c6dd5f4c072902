"""Running the real gateway under uvicorn on a free port, for end-to-end tests."""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from runtime.api.app import create_app
from runtime.api.guard import server_options
from runtime.config import Settings, settings_from_dict
from runtime.gateway import Gateway
from runtime.plugin_host.manager import PluginHost, load_plugins
from runtime.storage.keys import mint_key
from tests.fakes.threaded import ThreadedServer
from tests.fixtures import catalogue_plugin, testkit_plugin

UPSTREAM_KEY = "sk-test-upstream"

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], what: str = "the condition", *, within_s: float = 20.0, interval_s: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    For work the gateway does in the background (a flush, a record written just after the answer,
    a server starting): tests wait for the thing itself, never for a fixed time. The bound only
    stops a broken build from hanging.
    """
    deadline = time.monotonic() + within_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened within {within_s} s: {what}")
        time.sleep(interval_s)


@functools.cache
def test_plugins() -> PluginHost:
    # Loaded once per test session: building 150 catalogue tools' schemas took half a second per gateway.
    return load_plugins(extra={"testkit": testkit_plugin, "catalogue": catalogue_plugin})


def make_settings(
    tmp_path: Path,
    upstream_url: str,
    *,
    plugins: list[dict[str, Any]] | None = None,
    orchestration: dict[str, Any] | None = None,
    extra_orgs: list[dict[str, Any]] | None = None,
    database_url: str | None = None,
    **overrides: Any,
) -> Settings:
    raw: dict[str, Any] = {
        "database_url": database_url or f"sqlite:///{tmp_path / 'plugway.db'}",
        "providers": [{"id": "upstream", "kind": "openai", "base_url": upstream_url, "api_key": UPSTREAM_KEY, "timeout_s": 10, "max_retries": 0}],
        "models": [
            {"id": "gpt-test", "provider": "upstream", "upstream_model": "gpt-4o-mini", "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
            {"id": "gpt-other", "provider": "upstream"},
        ],
        "organisations": [
            {
                "id": "acme",
                "plugins": plugins if plugins is not None else [{"id": "clock"}, {"id": "calculator"}, {"id": "testkit", "config": {"flavour": "vanilla"}}],
            },
            {"id": "bare", "models": ["gpt-test"]},
            *(extra_orgs or []),
        ],
        "orchestration": {"max_tool_rounds": 4, "tool_timeout_s": 2, "keepalive_s": 0.2, **(orchestration or {})},
        "usage": {"flush_interval_s": 0.05},
        **overrides,
    }
    return settings_from_dict(raw)


class GatewayServer:
    """The real app in a real uvicorn, in a background thread with its own event loop."""

    def __init__(self, settings: Settings, plugins: PluginHost | None = None, *, run_worker: bool = False) -> None:
        self.settings = settings
        self.app = create_app(settings, plugins=plugins or test_plugins(), run_worker=run_worker)
        # Served as `plugway serve` serves it (uvicorn's own X-Forwarded-For trust off).
        self._runner = ThreadedServer(self.app, name="gateway", lifespan="on", options=server_options(settings.body_read_timeout_s))
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def gateway(self) -> Gateway:
        gateway: Gateway = self.app.state.gateway
        return gateway

    def start(
        self, *, settle_mcp: Iterable[str] | None = None, settle_s: float = 60.0, sock: socket.socket | None = None
    ) -> GatewayServer:
        """Serve, then wait until MCP servers have finished their first connection attempt.

        The gateway itself waits at most 5 s for MCP servers at start-up (a slow
        server is offered once it is up); on a loaded CI machine a test server can
        take longer, and a test sending its request then would see no tools.
        ``settle_mcp`` names the plugin ids to wait for (default: all of them).
        """
        self.port = self._runner.start(sock=sock)
        mcp = self.gateway.mcp
        if mcp is not None:
            deadline = time.monotonic() + settle_s
            while True:
                health = mcp.health()
                waiting = [
                    plugin_id
                    for plugin_id in (health if settle_mcp is None else settle_mcp)
                    if health.get(plugin_id, {}).get("state") == "starting"
                ]
                if not waiting or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        return self

    def mint(self, org: str = "acme", **limits: Any) -> str:
        secret, _ = mint_key(self.gateway.engine, organisation_id=org, **limits)
        return secret

    def flush_usage(self) -> None:
        loop = self._server_loop()
        asyncio.run_coroutine_threadsafe(self.gateway.usage.flush(), loop).result(timeout=10)

    def _server_loop(self) -> asyncio.AbstractEventLoop:
        # The usage writer task lives on the server's loop.
        task = self.gateway.usage._task
        assert task is not None
        return task.get_loop()

    def stop(self) -> None:
        self._runner.stop()


class Gateways:
    """The gateways a test (or a module) starts, all stopped at its end: the one way tests start one.

    ``start(**options)`` serves ``make_settings(directory, upstream_url, **options)``; a test that
    builds its own ``Settings`` (another provider, say) passes them instead, and a plugin
    catalogue of its own as ``plugin_host``.
    Every gateway of one ``Gateways`` shares its directory (so its SQLite file) unless the test
    passes ``directory=``. Used as the ``gateways`` fixture (tests/conftest.py), or as a context
    manager by module-scoped fixtures.
    """

    def __init__(self, directory: Path | None = None, upstream_url: str | None = None) -> None:
        # Both only for gateways started from options; ``start(settings)`` needs neither.
        self.directory = directory
        self.upstream_url = upstream_url
        self.started: list[GatewayServer] = []

    def start(
        self,
        settings: Settings | None = None,
        *,
        plugin_host: PluginHost | None = None,
        run_worker: bool = False,
        settle_mcp: Iterable[str] | None = None,
        directory: Path | None = None,
        upstream_url: str | None = None,
        **options: Any,
    ) -> GatewayServer:
        if settings is None:
            if directory is not None:
                directory.mkdir(parents=True, exist_ok=True)
            directory, upstream_url = directory or self.directory, upstream_url or self.upstream_url
            if directory is None or upstream_url is None:
                raise TypeError("a gateway started from options needs a directory and an upstream URL")
            settings = make_settings(directory, upstream_url, **options)
        elif options or directory is not None or upstream_url is not None:
            raise TypeError("pass either settings or the options to build them, not both")
        server = GatewayServer(settings, plugin_host, run_worker=run_worker)
        self.started.append(server)
        return server.start(settle_mcp=settle_mcp)

    def stop_all(self) -> None:
        for server in reversed(self.started):
            server.stop()
        self.started.clear()

    def __enter__(self) -> Gateways:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_all()
