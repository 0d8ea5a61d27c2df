"""Which HTTP proxy, if any, a new upstream connection goes through.

Two sources: the node's environment (``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` /
``NO_PROXY``, read once at start-up, the operator's) and a deployment's own ``proxy_url``
(``network.Network``, set by an org admin), which overrides the environment for that
deployment; ``"direct"`` means no proxy at all. Rules (docs/operations.md, "Egress proxies
and private CAs"), chosen to match curl and requests:

- a lower-case variable wins over its upper-case form when both are set (even set empty);
  ``ALL_PROXY`` stands in for a scheme whose own variable is unset;
- only ``http://`` proxies (a URL without a scheme is taken as one); the port defaults to 80;
  ``user:password@`` is percent-decoded and sent as ``Proxy-Authorization: Basic``;
- ``NO_PROXY``: comma-separated; ``*`` bypasses every host; a name matches itself and its
  subdomains (``example.com`` and ``.example.com`` alike, ``*.example.com`` too); an IP or a
  CIDR matches literal IP hosts in it; ``:port`` narrows an entry to that port.

Nothing here logs or puts in an error message the proxy's URL: it may hold a password.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from odock.egress import IPAddress, IPNetwork

# Read in this order of precedence for each scheme of upstream (lower case first, like curl).
_VARIABLES = {"https": ("https_proxy", "HTTPS_PROXY"), "http": ("http_proxy", "HTTP_PROXY")}
_ALL = ("all_proxy", "ALL_PROXY")
_NO = ("no_proxy", "NO_PROXY")
_BAD_HOST_CHARS = frozenset(" \t\r\n/\\@?#")
_CACHE_MAX = 1024


@dataclass(frozen=True, slots=True)
class Proxy:
    """An HTTP proxy to connect through. ``checked``: its own address goes through the egress policy."""

    host: str  # for connecting (an IPv6 address without brackets)
    port: int
    authorization: str = field(repr=False)  # the Proxy-Authorization value, or ""
    checked: bool  # a deployment's proxy (an org admin's choice), not the operator's environment

    @property
    def address(self) -> str:
        """``host:port``: how logs and errors name this proxy (never its credentials)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_proxy(url: str, *, checked: bool) -> Proxy:
    """The proxy of ``url`` (``[http://][user:pass@]host[:port]``); ValueError (never echoing it) if unusable."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port or 80
    except ValueError:
        raise ValueError("proxy URL is malformed") from None
    if parts.scheme.lower() != "http":
        raise ValueError("only http:// proxies are supported")
    host = parts.hostname
    if not host or _BAD_HOST_CHARS.intersection(host) or parts.path not in ("", "/") or parts.query:
        raise ValueError("proxy URL must be http://[user:password@]host:port")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError("proxy host name cannot be encoded") from None
    authorization = ""
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(credentials.encode()).decode("ascii")
    return Proxy(host, port, authorization, checked)


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class NoProxy:
    """The hosts a ``NO_PROXY`` list sends straight to the upstream."""

    def __init__(self, spec: str) -> None:
        self.everything = False
        self.names: list[tuple[str, int]] = []  # (lower-case name, port or 0 for any)
        self.networks: list[tuple[IPNetwork, int]] = []
        for raw in spec.split(","):
            entry = raw.strip().lower()
            if entry == "*":
                self.everything = True
            elif entry:
                self._add(entry)

    def _add(self, entry: str) -> None:
        host, port = entry, 0
        if entry.startswith("["):  # [v6]:port or [v6]
            host, _, rest = entry[1:].partition("]")
            if rest.startswith(":") and rest[1:].isdigit():
                port = int(rest[1:])
        elif entry.count(":") == 1:  # name:port or v4:port (a bare IPv6 address has several colons)
            host, _, text = entry.partition(":")
            if not text.isdigit():
                return  # not an entry anyone could mean: ignored, as curl ignores what it cannot match
            port = int(text)
        try:
            self.networks.append((ipaddress.ip_network(host, strict=False), port))
            return
        except ValueError:
            pass
        name = host.removeprefix("*").lstrip(".").rstrip(".")
        if name:
            self.names.append((name, port))

    @property
    def entries(self) -> int:
        """How many entries were understood (``*`` counts as one)."""
        return len(self.names) + len(self.networks) + int(self.everything)

    def matches(self, host: str, port: int) -> bool:
        """Whether ``host`` (an upstream URL's host, IPv6 without brackets) at ``port`` bypasses the proxy."""
        if self.everything:
            return True
        name = host.lower().rstrip(".")
        address = _ip(name)
        if address is not None:
            return any(
                (not p or p == port) and address.version == net.version and address in net
                for net, p in self.networks
            )
        return any(
            (not p or p == port) and (name == entry or name.endswith("." + entry)) for entry, p in self.names
        )


def _first(environ: Mapping[str, str], names: tuple[str, str]) -> str | None:
    for name in names:
        if name in environ:
            return environ[name]
    return None


class EnvironmentProxies:
    """The node's proxies from its environment: built once at start-up, asked once per new connection."""

    def __init__(self, https: Proxy | None, http: Proxy | None, no_proxy: NoProxy) -> None:
        self.https = https
        self.http = http
        self.no_proxy = no_proxy
        self._per_origin: dict[str, Proxy | None] = {}  # origin key -> decision (bounded)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> EnvironmentProxies:
        """Read the proxy variables; ValueError naming the variable (never its value) for an unusable one."""
        fallback = _first(environ, _ALL)
        chosen: dict[str, Proxy | None] = {}
        for scheme, names in _VARIABLES.items():
            value = _first(environ, names)
            name = next((n for n in names if n in environ), "")
            if value is None and fallback:
                value, name = fallback, next(n for n in _ALL if n in environ)
            try:
                chosen[scheme] = parse_proxy(value, checked=False) if value and value.strip() else None
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return cls(chosen["https"], chosen["http"], NoProxy(_first(environ, _NO) or ""))

    @property
    def configured(self) -> bool:
        """Whether any proxy is set."""
        return self.https is not None or self.http is not None

    def secrets(self) -> list[str]:
        """What a log line must never hold: each proxy's Proxy-Authorization value."""
        return [p.authorization for p in (self.https, self.http) if p is not None and p.authorization]

    def for_origin(self, key: str, host: str, port: int, tls: bool) -> Proxy | None:
        """The proxy for an upstream origin (``key``: its pool key), or None to connect directly."""
        try:
            return self._per_origin[key]
        except KeyError:
            pass
        proxy = self.https if tls else self.http
        if proxy is not None and self.no_proxy.matches(host, port):
            proxy = None
        if len(self._per_origin) >= _CACHE_MAX:
            self._per_origin.clear()
        self._per_origin[key] = proxy
        return proxy


NO_ENVIRONMENT = EnvironmentProxies(None, None, NoProxy(""))
_DEPLOYMENT_PROXIES: dict[str, Proxy | str] = {}  # URL -> its proxy, or why it is unusable


def deployment_proxy(url: str) -> Proxy:
    """A deployment's proxy (parsed once per distinct URL); ValueError if unusable."""
    hit = _DEPLOYMENT_PROXIES.get(url)
    if hit is None:
        try:
            hit = parse_proxy(url, checked=True)
        except ValueError as exc:
            hit = str(exc)
        if len(_DEPLOYMENT_PROXIES) >= _CACHE_MAX:
            _DEPLOYMENT_PROXIES.clear()
        _DEPLOYMENT_PROXIES[url] = hit
    if isinstance(hit, Proxy):
        return hit
    raise ValueError(hit)
