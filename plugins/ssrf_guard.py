"""Which addresses the http plugin may connect to: only globally routable ones.

The rule is "is this address globally routable", not a list of private flags:
a list misses ranges (``100.64.0.0/10``, where one cloud keeps its metadata
service at ``100.100.100.200``; the deprecated site-local ``fec0::/10``) and
addresses that carry an internal IPv4 address inside an IPv6 one. So:

- IPv6 forms that embed an IPv4 address are judged by that address:
  IPv4-mapped ``::ffff:0:0/96``, 6to4 ``2002::/16`` and NAT64 ``64:ff9b::/96``.
  Teredo ``2001::/32`` hides its client address and is refused outright (it is
  part of ``2001::/23``, refused below).
- IPv6 must then be global unicast (``2000::/3``), which leaves out loopback,
  unspecified, link-local, site-local, unique-local, multicast, discard-only,
  local-use NAT64 and every unallocated range.
- Both families must pass ``ipaddress``' ``is_global`` and avoid the IANA
  special-purpose ranges below, listed here because ``is_global`` differs between
  Python versions (3.11 calls multicast and ``192.0.0.0/24`` global).

The resolver is :func:`resolve_host`, looked up at call time so tests can stub
it: the guard's tests never send traffic anywhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from runtime import ToolError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# IANA special-purpose ranges that are not globally reachable (or whose reachability
# is "N/A"), beyond what the 2000::/3 rule already removes from IPv6.
_NOT_GLOBAL_V4 = tuple(
    ipaddress.IPv4Network(network)
    for network in (
        "0.0.0.0/8",           # "this network"
        "10.0.0.0/8",          # private use
        "100.64.0.0/10",       # shared address space (carrier-grade NAT, cloud metadata)
        "127.0.0.0/8",         # loopback
        "169.254.0.0/16",      # link local (cloud metadata)
        "172.16.0.0/12",       # private use
        "192.0.0.0/24",        # IETF protocol assignments
        "192.0.2.0/24",        # documentation (TEST-NET-1)
        "192.88.99.0/24",      # deprecated 6to4 relay anycast
        "192.168.0.0/16",      # private use
        "198.18.0.0/15",       # benchmarking
        "198.51.100.0/24",     # documentation (TEST-NET-2)
        "203.0.113.0/24",      # documentation (TEST-NET-3)
        "224.0.0.0/4",         # multicast
        "240.0.0.0/4",         # reserved, and 255.255.255.255 limited broadcast
    )
)
_NOT_GLOBAL_V6 = tuple(
    ipaddress.IPv6Network(network)
    for network in (
        "2001::/23",           # IETF protocol assignments, Teredo included
        "2001:db8::/32",       # documentation
        "3fff::/20",           # documentation
    )
)
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
MAX_HOSTNAME = 253
MAX_LABEL = 63


def is_globally_routable(address: IPAddress) -> bool:
    """True when ``address`` is reachable on the public internet and so safe to fetch from."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_globally_routable(embedded)
        if address not in _GLOBAL_UNICAST or any(address in network for network in _NOT_GLOBAL_V6):
            return False
    elif any(address in network for network in _NOT_GLOBAL_V4):
        return False
    return address.is_global and not address.is_multicast


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _SIX_TO_FOUR:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def ascii_hostname(hostname: str) -> str:
    """The host as sent on the wire (IDNA for names), or a ToolError for one that cannot be."""
    try:
        return str(ipaddress.ip_address(hostname))
    except ValueError:
        pass
    if len(hostname) > MAX_HOSTNAME:
        raise ToolError(f"the host name is longer than {MAX_HOSTNAME} characters")
    try:
        encoded = hostname.encode("idna").decode("ascii")
    except UnicodeError:
        raise ToolError(f"'{hostname[:80]}' is not a valid host name") from None
    labels = encoded.rstrip(".").split(".")
    if len(encoded) > MAX_HOSTNAME or any(not label or len(label) > MAX_LABEL for label in labels):
        raise ToolError(f"'{hostname[:80]}' is not a valid host name")
    if not all(character.isalnum() or character in "-_." for character in encoded):
        raise ToolError(f"'{hostname[:80]}' is not a valid host name")
    return encoded


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (an IP literal resolves to itself)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise ToolError(f"cannot resolve host '{host}'") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def vetted_address(host: str, port: int, *, allow_private: bool) -> str:
    """The address to connect to for ``host``, refusing a host that resolves to any internal one."""
    addresses = await resolve_host(host, port)
    if not addresses:
        raise ToolError(f"cannot resolve host '{host}'")
    if not allow_private:
        for text in addresses:
            if not is_globally_routable(ipaddress.ip_address(text)):
                raise ToolError(f"refused: '{host}' resolves to a private or internal address ({text})")
    return addresses[0]
