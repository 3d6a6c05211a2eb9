"""Where a webhook may point: URL syntax, every numeric host form, refused address ranges (stdlib).

One definition used twice: at create (:func:`check_url`, the host as written) and at delivery
(:func:`refused_address`, on each address the name resolves to).

- The URL must be an absolute URI of RFC 3986 characters (no spaces, no raw non-ASCII), with a
  host and no user info.
- A host whose last label is a number is an IPv4 address in any of the forms a resolver or a
  browser accepts (WHATWG URL host parsing): ``127.1``, ``2130706433``, ``0x7f000001``,
  ``0177.0.0.1``; an invalid such form is refused. IPv6 literals are checked with the IPv4 address
  they embed (IPv4-mapped, 6to4, NAT64, Teredo).
- Refused: loopback, private, link-local, CGNAT (100.64.0.0/10), multicast, unspecified, reserved
  and every other non-global range; names ``localhost``, ``*.localhost``, ``*.local`` (a trailing
  dot changes nothing).
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

_URI_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
LOCAL_NAMES = ("localhost",)
LOCAL_SUFFIXES = (".localhost", ".local")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class UrlRefused(ValueError):
    """The URL cannot be a webhook target; the message says why (never echoing secrets)."""


def _ipv4_number(part: str) -> int:
    if part[:2].lower() == "0x":
        digits, radix = part[2:], 16
        if digits == "":
            return 0
    elif len(part) > 1 and part[0] == "0":
        digits, radix = part[1:], 8
    else:
        digits, radix = part, 10
    allowed = {16: "0123456789abcdefABCDEF", 8: "01234567", 10: "0123456789"}[radix]
    if not digits or not all(c in allowed for c in digits):
        raise ValueError(part)
    return int(digits, radix)


def _ends_in_number(labels: list[str]) -> bool:
    last = labels[-1]
    if last and all(c.isdigit() for c in last):
        return True
    return last[:2].lower() == "0x" and all(c in "0123456789abcdefABCDEF" for c in last[2:])


def parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address ``host`` denotes in any numeric form, None for a name; ValueError for a
    host that ends in a number but is not a valid address (``1.2.3.4.5``, ``256.1.1.1``)."""
    labels = host.split(".")
    if labels[-1] == "" and len(labels) > 1:
        labels.pop()
    if not _ends_in_number(labels):
        return None
    if len(labels) > 4 or any(p == "" for p in labels):
        raise ValueError(host)
    numbers = [_ipv4_number(p) for p in labels]
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        raise ValueError(host)
    value = numbers[-1]
    for i, n in enumerate(numbers[:-1]):
        value += n * 256 ** (3 - i)
    return ipaddress.IPv4Address(value)


def _embedded_v4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    found = [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
    if ip.teredo:
        found.extend(ip.teredo)
    if ip in _NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def refused_address(ip: Address) -> str | None:
    """Why ``ip`` may not receive webhooks (a short phrase), or None for a global unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        for v4 in _embedded_v4(ip):
            why = refused_address(v4)
            if why:
                return why
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "a shared (CGNAT) address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved or not ip.is_global:
        return "a reserved address"
    return None


def check_url(url: object, *, allow_insecure: bool) -> str:
    """``url`` if it may be registered as a webhook, else :class:`UrlRefused`.

    ``allow_insecure`` (the local server's switch for tests) also accepts http:// and refused
    addresses; the URL must still be a valid URI."""
    if not isinstance(url, str) or not url:
        raise UrlRefused("url must be an https URL")
    if not _URI_CHARS.fullmatch(url) or _BAD_PERCENT.search(url):
        raise UrlRefused("url is not a valid URI (spaces, raw non-ASCII or control characters)")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port
    except ValueError:
        raise UrlRefused("url is not a valid URL") from None
    allowed = ("https", "http") if allow_insecure else ("https",)
    if parts.scheme not in allowed:
        raise UrlRefused("url must use https")
    if not host:
        raise UrlRefused("url has no host")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UrlRefused("url must not contain user info")
    ip = host_address(host)
    if allow_insecure:
        return url
    if ip is None:
        name = host.rstrip(".").lower()
        if name in LOCAL_NAMES or name.endswith(LOCAL_SUFFIXES):
            raise UrlRefused("url must not point to a local host")
        return url
    why = refused_address(ip)
    if why:
        raise UrlRefused(f"url must not point to {why}")
    return url


def host_address(host: str) -> Address | None:
    """The address a URL host denotes (None for a DNS name); UrlRefused for a malformed host."""
    if ":" in host:  # urlsplit already removed the brackets of an IPv6 literal
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise UrlRefused("url has an invalid IPv6 address") from None
    try:
        v4 = parse_ipv4(host)
    except ValueError:
        raise UrlRefused("url has an invalid IPv4 address") from None
    if v4 is not None:
        return v4
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise UrlRefused("url has an invalid host name")
    return None
