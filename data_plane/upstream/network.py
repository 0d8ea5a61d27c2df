"""How a deployment's connections reach their upstream: an HTTP proxy and extra trusted CAs.

Plain data, carried by a route's deployment (``governance.domain.Deployment``) and handed to
the transport with each request; the pool (``pool.py``) opens and keys connections by it, so
no connection made through one proxy or trust store carries another's traffic.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

DIRECT = "direct"  # a deployment's proxy_url that means: never a proxy, whatever the environment


@dataclass(frozen=True, slots=True)
class Network:
    """A deployment's own way out; the empty one means the node's environment (HTTPS_PROXY…)."""

    proxy_url: str = field(default="", repr=False)  # "", "direct" or http://[user:pass@]host:port
    ca_bundle: str = field(default="", repr=False)  # PEM, trusted besides the system store
    # An opaque tag for pool keys (never the proxy's password). Computed once: a network is built
    # per route update and read with every request, and a CA bundle may be kilobytes long.
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = ""
        if self.proxy_url or self.ca_bundle:
            digest = hashlib.blake2b(f"{self.proxy_url}\n{self.ca_bundle}".encode(), digest_size=8)
            key = digest.hexdigest()
        object.__setattr__(self, "key", key)  # frozen: set once, here


ENVIRONMENT = Network()
