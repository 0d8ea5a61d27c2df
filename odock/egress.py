"""The egress policy: which upstream addresses a model may send its provider key to.

Both planes apply it, so it lives here once: the control plane when a model is created or
changed (``ODOCK_EGRESS_ALLOW`` is its setting, and it hands the same list to every node with
each route), the data plane on every new upstream connection, against the address it is about
to connect to (a name that resolved to a public address at create time cannot rebind its way
to the metadata service later).

By default every address in the ranges below is refused: loopback, private (RFC 1918, ULA),
shared (CGNAT), link-local (cloud metadata at 169.254.169.254), unspecified, multicast and
reserved/documentation ranges, and IPv6 forms that embed an IPv4 address (IPv4-mapped, 6to4,
NAT64) when the embedded address is refused. The allow list widens that: a CIDR (or a single
address) admits those addresses; a host name admits that name whatever it resolves to (an
operator vouching for an internal service such as ``vllm``). Python's ``ipaddress.is_global``
is not used: its answers differ between versions and call 6to4 of 127.0.0.1 global.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_ENTRIES = 256
_HOST = re.compile(r"^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62}))*$")


def _nets(kind: str, *cidrs: str) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(c), kind) for c in cidrs)


# (network, what it is) -- the "what" ends up in the control plane's refusal message.
DENIED: tuple[tuple[IPNetwork, str], ...] = (
    *_nets("unspecified", "0.0.0.0/8", "::/128"),
    *_nets("loopback", "127.0.0.0/8", "::1/128"),
    *_nets("private", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"),
    *_nets("shared (CGNAT)", "100.64.0.0/10"),
    *_nets("link-local", "169.254.0.0/16", "fe80::/10"),
    *_nets("multicast", "224.0.0.0/4", "ff00::/8"),
    # 240.0.0.0/4 includes 255.255.255.255; ::/96 is IPv4-compatible (deprecated), ::ffff:0:0:0/96
    # IPv4-translated (SIIT), 2001::/23 IETF protocol assignments (Teredo among them).
    *_nets("reserved", "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24"),
    *_nets("reserved", "240.0.0.0/4", "::/96", "::ffff:0:0:0/96", "100::/64", "2001::/23", "2001:db8::/32"),
    *_nets("reserved", "fec0::/10"),
)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (IPv4-mapped, 6to4, NAT64), else None."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def denied_range(ip: IPAddress) -> str | None:
    """What default-refused range ``ip`` is in ("loopback", "private", ...), or None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        ip = ipaddress.IPv6Address(ip.compressed.partition("%")[0])
    inner = embedded_ipv4(ip)
    for candidate in (ip, inner) if inner is not None else (ip,):
        for net, kind in DENIED:
            if candidate.version == net.version and candidate in net:
                return kind
    return None


class EgressPolicyError(ValueError):
    """An allow-list entry that is neither a CIDR/address nor a host name (the message names it)."""


@dataclass(frozen=True)
class EgressPolicy:
    """The default refusals widened by an allow list (build with :func:`policy_for`)."""

    entries: tuple[str, ...]  # canonical, as sent to the data planes
    networks: tuple[IPNetwork, ...]
    hosts: frozenset[str]

    def allows_host(self, host: str) -> bool:
        """Whether ``host`` (a name from a base URL) is listed by name."""
        return bool(self.hosts) and host.lower().rstrip(".") in self.hosts

    def refusal(self, ip: IPAddress) -> str | None:
        """Why ``ip`` may not be connected to ("loopback", ...), or None when it may."""
        kind = denied_range(ip)
        if kind is None or not self.networks:
            return kind
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
            ip = ipaddress.IPv6Address(ip.compressed.partition("%")[0])
        inner = embedded_ipv4(ip)
        for candidate in (ip, inner) if inner is not None else (ip,):
            if any(candidate.version == net.version and candidate in net for net in self.networks):
                return None
        return kind

    def allowed(self, ip: IPAddress) -> bool:
        """Whether a connection to ``ip`` is allowed."""
        return self.refusal(ip) is None


def parse_entry(entry: str) -> IPNetwork | str:
    """One allow-list entry: a network (``10.0.0.0/8``, ``::1``) or a lower-cased host name."""
    text = entry.strip().lower()
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        pass
    try:  # host bits set: "127.0.0.1/0" would silently mean 0.0.0.0/0, every address
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    else:
        raise EgressPolicyError(f"{entry.strip()[:80]!r} has host bits set; the network is {network}")
    name = text.rstrip(".")
    if not _HOST.match(name) or name.replace(".", "").isdigit():
        raise EgressPolicyError(f"{entry.strip()[:80]!r} is neither a CIDR, an IP address nor a host name")
    return name


def parse_spec(spec: str) -> tuple[str, ...]:
    """``ODOCK_EGRESS_ALLOW``'s comma-separated entries, checked and in canonical form."""
    out: list[str] = []
    for item in spec.split(","):
        if not item.strip():
            continue
        parsed = parse_entry(item)
        canonical = parsed if isinstance(parsed, str) else parsed.with_prefixlen
        if canonical not in out:
            out.append(canonical)
        if len(out) > MAX_ENTRIES:
            raise EgressPolicyError(f"at most {MAX_ENTRIES} entries")
    return tuple(out)


@functools.lru_cache(maxsize=64)
def policy_for(entries: tuple[str, ...]) -> EgressPolicy:
    """The policy of an allow list, parsed once per distinct list (the data plane gets one per route).

    Entries that do not parse are ignored here (the control plane validated them at start-up;
    a node must not fail because a newer control plane knows more forms).
    """
    networks: list[IPNetwork] = []
    hosts: set[str] = set()
    for entry in entries[:MAX_ENTRIES]:
        try:
            parsed = parse_entry(entry)
        except EgressPolicyError:
            continue
        if isinstance(parsed, str):
            hosts.add(parsed)
        else:
            networks.append(parsed)
    return EgressPolicy(entries=entries, networks=tuple(networks), hosts=frozenset(hosts))


def policy_of(entries: Iterable[str]) -> EgressPolicy:
    """:func:`policy_for` for any iterable (a protobuf repeated field, a list)."""
    return policy_for(tuple(entries))


DEFAULT_POLICY = policy_for(())
