"""The http plugin only connects to globally routable addresses (issue 9, item 8).

Every IANA special-purpose range of both families is tried through a stubbed
resolver: no test here sends a packet anywhere but to 127.0.0.1.
"""

from __future__ import annotations

import ipaddress

import pytest

from plugins import ssrf_guard
from runtime import ToolError
from tests.plugins.conftest import StubResolver
from tests.plugins.tooling import ALLOW_LOOPBACK, Page, call_tool, local_site

# IANA IPv4 and IPv6 Special-Purpose Address Registries (plus multicast and the
# deprecated site-local block): every range whose "Globally Reachable" is False or N/A.
NOT_GLOBALLY_REACHABLE = [
    "0.0.0.0/8", "0.0.0.0/32", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.0.0/29", "192.0.0.8/32", "192.0.0.170/32",
    "192.0.0.171/32", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
    "::1/128", "::/128", "64:ff9b:1::/48", "100::/64", "100:0:0:1::/64", "2001::/23",
    "2001::/32", "2001:2::/48", "2001:10::/28", "2001:db8::/32", "3fff::/20", "5f00::/16",
    "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
]
# Globally reachable per IANA but inside a block refused as a whole: anycast service
# addresses and the like, which a page fetcher has no business with.
REFUSED_ALTHOUGH_REACHABLE = [
    "192.0.0.9/32", "192.0.0.10/32", "2001:1::1/128", "2001:1::2/128", "2001:1::3/128",
    "2001:3::/32", "2001:4:112::/48", "2001:20::/28", "2001:30::/28",
]
GLOBALLY_REACHABLE = [
    "192.31.196.0/24", "192.52.193.0/24", "192.175.48.0/24", "2620:4f:8000::/48",
    "8.8.8.8/32", "1.1.1.1/32", "93.184.215.14/32", "2606:4700:4700::1111/128", "2a00:1450::/32",
]
# IPv6 forms that carry an IPv4 address are judged by that address.
EMBEDDED = {
    "::ffff:127.0.0.1": False, "::ffff:169.254.169.254": False, "::ffff:8.8.8.8": True,
    "2002:7f00:1::": False, "2002:a9fe:a9fe::": False, "2002:a00:1::1": False,
    "2002:6464:64c8::": False, "2002:808:808::1": True,
    "64:ff9b::7f00:1": False, "64:ff9b::a9fe:a9fe": False, "64:ff9b::6464:64c8": False,
    "64:ff9b::808:808": True,
    "::127.0.0.1": False, "::8.8.8.8": False,  # IPv4-compatible, deprecated: refused
}


def samples(network_text: str) -> list[str]:
    network = ipaddress.ip_network(network_text)
    middle = network.network_address + network.num_addresses // 2
    return [str(address) for address in dict.fromkeys([network.network_address, middle, network.broadcast_address])]


def addresses_of(networks: list[str]) -> list[str]:
    return [address for network in networks for address in samples(network)]


async def vet() -> str:
    return await ssrf_guard.vetted_address("site.example", 443, allow_private=False)


@pytest.mark.parametrize("address", addresses_of(NOT_GLOBALLY_REACHABLE + REFUSED_ALTHOUGH_REACHABLE))
async def test_special_purpose_addresses_are_refused(address: str, resolver: StubResolver) -> None:
    resolver("site.example", address)
    with pytest.raises(ToolError, match="private or internal"):
        await vet()


@pytest.mark.parametrize("address", addresses_of(GLOBALLY_REACHABLE))
async def test_globally_routable_addresses_are_allowed(address: str, resolver: StubResolver) -> None:
    resolver("site.example", address)
    assert ipaddress.ip_address(await vet()) == ipaddress.ip_address(address)


@pytest.mark.parametrize(("address", "allowed"), EMBEDDED.items())
async def test_embedded_ipv4_decides(address: str, allowed: bool, resolver: StubResolver) -> None:
    resolver("site.example", address)
    if allowed:
        assert ipaddress.ip_address(await vet()) == ipaddress.ip_address(address)
    else:
        with pytest.raises(ToolError, match="private or internal"):
            await vet()


async def test_one_internal_answer_among_public_ones_is_enough_to_refuse(resolver: StubResolver) -> None:
    resolver("site.example", "8.8.8.8", "2606:4700:4700::1111", "100.100.100.200")
    with pytest.raises(ToolError, match=r"100\.100\.100\.200"):
        await vet()


@pytest.mark.parametrize(
    "url",
    [
        "http://100.100.100.200/latest/meta-data/",
        "http://[fec0::1]/",
        "http://[2002:7f00:1::]/",
        "http://[2002:a9fe:a9fe::]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  # Teredo
        "http://224.0.0.1/",
        "http://metadata.internal/computeMetadata/v1/",
    ],
)
def test_the_tool_refuses_before_connecting(url: str, resolver: StubResolver) -> None:
    resolver("metadata.internal", "100.100.100.200")
    with pytest.raises(ToolError, match="private or internal"):
        call_tool("http", "fetch", url=url)


def test_the_vetted_address_is_pinned_and_every_redirect_re_vetted(resolver: StubResolver) -> None:
    with local_site() as site:
        port = site.url.rsplit(":", 1)[1]
        site.pages["/start"] = Page(b"", headers={"Location": f"http://other.example:{port}/end"}, status=302)
        site.pages["/end"] = Page(b"<title>Arrived</title>", "text/html")
        resolver("shop.example", "127.0.0.1")
        resolver("other.example", "127.0.0.1")
        result = call_tool("http", "fetch", ALLOW_LOOPBACK, url=f"http://shop.example:{port}/start")
    assert result["title"] == "Arrived"
    assert resolver.lookups == ["shop.example", "other.example"]
    # The connection went to the vetted address; the server still saw the names asked for.
    assert [headers["Host"] for _, headers in site.requests] == [f"shop.example:{port}", f"other.example:{port}"]


def test_a_redirect_to_another_scheme_is_refused(resolver: StubResolver) -> None:
    with local_site() as site:
        site.pages["/start"] = Page(b"", headers={"Location": "file:///etc/passwd"}, status=302)
        with pytest.raises(ToolError, match="only absolute http"):
            call_tool("http", "fetch", ALLOW_LOOPBACK, url=f"{site.url}/start")
