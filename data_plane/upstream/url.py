"""Splitting an upstream URL into where to connect and what to send, cached per URL."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 3986 characters allowed in a request target; "%" keeps existing escapes as they are.
_TARGET_SAFE = "!$&'()*+,;=:@/?%~"
_CACHE_MAX = 1024


@dataclass(frozen=True, slots=True)
class Origin:
    """Where to connect: scheme, host and port, and how the Host header names them."""

    key: str  # "scheme://host:port": the pool key (a str hashes once, a tuple every time)
    host: str  # for connecting (an IPv6 address without brackets)
    port: int
    tls: bool
    host_header: str  # the Host header value (port omitted when it is the scheme's default)


_CACHE: dict[str, tuple[Origin, str]] = {}


def split_url(url: str) -> tuple[Origin, str]:
    """The origin and the request target (path and query) of an absolute http(s) URL; ValueError if not one."""
    hit = _CACHE.get(url)
    if hit is not None:
        return hit
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError("upstream URL must be http or https")
    host = parts.hostname
    if not host or parts.username is not None or parts.password is not None:
        raise ValueError("upstream URL must have a host and no userinfo")
    port = parts.port or _DEFAULT_PORTS[scheme]  # .port raises ValueError for a bad one
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    bracketed = f"[{host}]" if ":" in host else host
    host_header = bracketed if port == _DEFAULT_PORTS[scheme] else f"{bracketed}:{port}"
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    target = quote(target, safe=_TARGET_SAFE)
    origin = Origin(f"{scheme}://{bracketed}:{port}", host, port, scheme == "https", host_header)
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[url] = (origin, target)
    return origin, target
