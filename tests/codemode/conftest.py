"""A gateway with the shop plugin next to the test plugins, on the fake OpenAI upstream."""

from __future__ import annotations

import functools
from typing import Any

import openai
import pytest

from runtime.plugin_host.manager import PluginHost, load_plugins
from tests.codemode import shop_plugin
from tests.fixtures import catalogue_plugin, testkit_plugin
from tests.support import Gateways, GatewayServer

SHOP_PLUGINS: list[dict[str, Any]] = [{"id": "shop"}, {"id": "calculator"}, {"id": "testkit", "config": {"flavour": "vanilla"}}]


@functools.cache
def shop_plugins() -> PluginHost:
    return load_plugins(extra={"testkit": testkit_plugin, "catalogue": catalogue_plugin, "shop": shop_plugin})


@pytest.fixture
def shop_gateway(request: pytest.FixtureRequest, gateways: Gateways) -> GatewayServer:
    """Tuned with @pytest.mark.gateway(...) like the ``gateway`` fixture; plugins default to the shop's."""
    marker = request.node.get_closest_marker("gateway")
    options = {"plugins": SHOP_PLUGINS, **(dict(marker.kwargs) if marker else {})}
    return gateways.start(plugin_host=shop_plugins(), **options)


@pytest.fixture
def shop(shop_gateway: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=shop_gateway.base_url, api_key=shop_gateway.mint(), max_retries=0, timeout=30)
