"""Who is asking, read from a request: the `Actor` the admin and the API pass to the services,
and the client address behind our proxies (also axes' lockout key, AXES_CLIENT_IP_CALLABLE)."""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest

from scheduler.audit import Actor


def actor_from_request(request: HttpRequest, *, via: str) -> Actor:
    user = getattr(request, "user", None)
    authenticated = user is not None and user.is_authenticated
    return Actor(
        user_id=user.pk if authenticated else None,
        username=user.get_username() if authenticated else "",
        ip=client_ip(request),
        via=via,
    )


def client_ip(request: HttpRequest) -> str | None:
    """REMOTE_ADDR, or the proxy's X-Forwarded-For entry when OPS_TRUSTED_PROXIES > 0.

    Only the entries our own proxies appended can be trusted, so with N proxies the address is
    the N-th from the right; anything further left is whatever the client chose to send. The
    entry must be an IP address, with a port (`1.2.3.4:5678`, `[2001:db8::1]:443`) tolerated and
    dropped; anything else (`not-an-ip`) is not an address, and REMOTE_ADDR is recorded instead.
    """
    proxies = settings.OPS_TRUSTED_PROXIES
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",")]
        if len(hops) >= proxies and (address := ip_address_of(hops[-proxies])):
            return address
    return ip_address_of(request.META.get("REMOTE_ADDR", ""))


def ip_address_of(text: str) -> str | None:
    """`text` as a normalised IP address (port and IPv6 zone stripped), or None if it is none."""
    text = text.strip()
    if text.startswith("["):  # [v6]:port or [v6]
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # v4:port; a bare v6 address has two or more colons
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # PostgreSQL's inet takes no zone
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:1.2.3.4 is the client 1.2.3.4
    return str(mapped or address)
