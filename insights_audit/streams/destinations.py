"""Where a stream may deliver: ``https`` URLs whose host resolves only to public addresses.

The check runs when a stream is created or its URL changes, and again before every
delivery, on the addresses the delivery then connects to (the connection goes to the checked
address, never to a second lookup), so a name that later resolves to a private address
cannot reach inside the network. ``STREAM_ALLOW_HTTP`` and ``STREAM_ALLOW_PRIVATE`` lift the
two rules (for a receiver on the same host or network, and for tests).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"https": 443, "http": 80}


class RefusedDestination(ValueError):
    """A destination the service will not deliver to, and why (shown to the caller)."""


@dataclass(frozen=True)
class Destination:
    scheme: str
    host: str
    port: int
    # Path and query, as sent in the request line.
    target: str


def parse(url: str, *, allow_http: bool) -> Destination:
    """The parts of a stream's URL; RefusedDestination unless it is an absolute ``https``
    (or, allowed, ``http``) URL with a host and no user information."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RefusedDestination("Not a valid URL.") from exc
    allowed = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in allowed:
        raise RefusedDestination(
            "Must be an https URL." if not allow_http else "Must be an http or https URL."
        )
    if not parts.hostname:
        raise RefusedDestination("Must name a host.")
    if parts.username is not None or parts.password is not None:
        raise RefusedDestination("Must not carry a user name or password.")
    if parts.fragment:
        raise RefusedDestination("Must not have a fragment.")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Destination(parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme], target)


def is_public(address: str) -> bool:
    """Whether ``address`` is a public unicast address: not loopback, private, link-local
    (cloud metadata services live there), shared, reserved, multicast or unspecified."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (an address literal resolves to itself)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def addresses(destination: Destination, *, allow_private: bool) -> list[str]:
    """The addresses to connect to; RefusedDestination if the host does not resolve or any of
    its addresses is not public (unless allowed)."""
    try:
        found = resolve(destination.host, destination.port)
    except OSError as exc:
        raise RefusedDestination(f"The host {destination.host} does not resolve.") from exc
    if not found:
        raise RefusedDestination(f"The host {destination.host} does not resolve.")
    if not allow_private:
        refused = [address for address in found if not is_public(address)]
        if refused:
            raise RefusedDestination(
                f"The host {destination.host} resolves to a loopback, private, link-local or"
                f" reserved address ({refused[0]})."
            )
    return found
