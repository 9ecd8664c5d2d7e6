"""Which image URLs the daemon may fetch: the ``image_fetch.allow`` list and the SSRF rule.

An entry of ``image_fetch.allow`` is a network (``10.0.0.0/8``, ``2001:db8::/32``, a single
address) or a host name pattern (``img.example.com``, ``*.cdn.example.com``). A URL's host is
resolved and **every** address it resolves to must be permitted, else the URL is refused:

* an address inside a listed network is permitted, whatever kind it is (this is the only way to
  reach private, loopback, link-local, shared or reserved addresses);
* a public (globally routable, not multicast) address is permitted when the list is empty, or
  when the host name matches a listed host pattern. A listed name never makes a private address
  fetchable: a name can be made to resolve anywhere.

The fetcher connects to the very address that was checked (no second lookup an attacker could
answer differently) and applies the same check to every redirect target.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["FetchPolicy", "Refused", "parse_allow_entry"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

_HOST_PATTERN = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


class Refused(Exception):
    """The URL may not be fetched; the message says which address or rule refused it."""


def parse_allow_entry(entry: str) -> IPNetwork | str:
    """A network, or a lower-cased host pattern; ``ValueError`` naming what is wrong otherwise."""
    text = entry.strip().lower()
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    if not _HOST_PATTERN.match(text):
        raise ValueError(f"{entry!r} is neither a network (10.0.0.0/8) nor a host name (img.example.com, "
                         "*.example.com)")
    return text


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (A and AAAA)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise Refused(f"cannot resolve {host}: {e}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _plain(address: str) -> IPAddress:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone index
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return ip


@dataclass(frozen=True)
class FetchPolicy:
    networks: tuple[IPNetwork, ...] = ()
    hosts: tuple[str, ...] = ()
    resolver: Resolver = system_resolver

    @classmethod
    def from_allow(cls, allow: Iterable[str], resolver: Resolver = system_resolver) -> FetchPolicy:
        networks, hosts = [], []
        for entry in allow:
            parsed = parse_allow_entry(entry)
            (hosts if isinstance(parsed, str) else networks).append(parsed)
        return cls(tuple(networks), tuple(hosts), resolver)

    def _host_listed(self, host: str) -> bool:
        for pattern in self.hosts:
            if pattern.startswith("*.") and host.endswith(pattern[1:]) and host != pattern[2:]:
                return True
            if host == pattern:
                return True
        return False

    def _permitted(self, ip: IPAddress, host: str) -> bool:
        if any(ip in net for net in self.networks if net.version == ip.version):
            return True
        public = ip.is_global and not ip.is_multicast
        return public and ((not self.networks and not self.hosts) or self._host_listed(host))

    def resolve(self, host: str, port: int) -> str:
        """The address to connect to for ``host``; raises :class:`Refused` unless every address is permitted."""
        host = host.lower().rstrip(".")
        try:
            addresses = [str(ipaddress.ip_address(host))]  # an address literal: no lookup
        except ValueError:
            addresses = self.resolver(host, port)
        if not addresses:
            raise Refused(f"{host} resolves to no address")
        checked = [_plain(a) for a in addresses]
        for ip in checked:
            if not self._permitted(ip, host):
                kind = "public" if ip.is_global else "private, loopback, link-local or reserved"
                raise Refused(f"{host} resolves to {ip} ({kind}), not allowed by image_fetch.allow")
        return str(checked[0])
