"""The egress tests' parts: a switchable fake upstream served over TLS with a leaf from a private
CA (for 127.0.0.1), models whose deployments carry ``proxy_url`` / ``ca_bundle``, and the checks
that a proxy's password shows nowhere."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from odock.v1 import models_pb2
from tests.fakes.connect_proxy import ConnectProxy
from tests.fakes.switchable import SwitchableUpstream
from tests.support.provision import Provisioner, family_enum
from tests.system.e2e.routing.stack import PRICING


@dataclass
class TlsUpstream(SwitchableUpstream):
    """A ``SwitchableUpstream`` on https (its certificate signed by the tests' private CA only)."""

    ssl_context: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def _listen(self) -> None:
        assert self._server is not None and self.ssl_context is not None
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(self._server, "127.0.0.1", self.port, reuse_address=True,
                                                  ssl=self.ssl_context)  # fmt: skip
        self.port = int(self._listener.sockets[0].getsockname()[1])


@dataclass(frozen=True)
class Dep:
    """One deployment on a TLS upstream, with its own proxy and CA bundle ("": none)."""

    up: TlsUpstream
    proxy_url: str = ""
    ca_bundle: str = ""
    weight: int = 1


@dataclass
class Org:
    """A fresh org (enterprise tier), its all-models key and one credential per upstream."""

    admin: Provisioner
    id: str
    name: str
    key: str = ""
    credentials: dict[int, str] = field(default_factory=dict)

    @classmethod
    async def create(cls, admin: Provisioner) -> Org:
        org = await admin.create_org(tier="enterprise")
        out = cls(admin, org.id, org.name)
        _, out.key = await admin.create_key(org.id)
        return out

    async def credential(self, up: SwitchableUpstream) -> str:
        if id(up) not in self.credentials:
            cred = await self.admin.create_credential(self.id, up.family, up.secret, name=f"cred-{up.name}")
            self.credentials[id(up)] = cred.name
        return self.credentials[id(up)]

    async def model(self, name: str, deps: Sequence[Dep]) -> models_pb2.Model:
        """Created through the admin gRPC API; deployments are named after their upstreams."""
        out = [models_pb2.Deployment(name=d.up.name, base_url=d.up.base_url, credential=await self.credential(d.up),
                                     upstream_slug=d.up.slug, weight=d.weight, proxy_url=d.proxy_url,
                                     ca_bundle=d.ca_bundle) for d in deps]  # fmt: skip
        model = models_pb2.Model(org_id=self.id, name=name, family=family_enum(deps[0].up.family), pricing=PRICING,
                                 deployments=out)  # fmt: skip
        created: models_pb2.Model = await self.admin.models.CreateModel(
            models_pb2.CreateModelRequest(model=model), metadata=self.admin.metadata
        )
        return created


def connects_to(proxy: ConnectProxy, port: int) -> list[str | None]:
    """The Proxy-Authorization of every CONNECT ``proxy`` received for 127.0.0.1:``port``."""
    want = f"CONNECT 127.0.0.1:{port} "
    return [
        auth for line, auth in zip(proxy.lines, proxy.authorizations, strict=True) if line.startswith(want)
    ]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def secret_forms(user: str, password: str, proxy_url: str) -> list[str]:
    """What must never show: the password, the Basic value's base64 part, the whole proxy URL."""
    return [password, basic(user, password).removeprefix("Basic "), proxy_url]


def assert_nowhere(texts: Iterable[tuple[str, str]], forms: Sequence[str]) -> None:
    """None of ``forms`` in any (where, text) of ``texts``."""
    for where, text in texts:
        assert text, f"{where}: nothing to look in"
        for form in forms:
            assert form not in text, f"{form!r} shows in {where}"


def files_text(paths: Iterable[Path]) -> list[tuple[str, str]]:
    """(path, contents) of every existing, non-empty file of ``paths`` (binary read, as latin-1).

    An empty file holds no secret: a usage spool segment the shipper has just opened is one, at
    whatever moment the test reads the directory (found by CI)."""
    texts = [(str(p), p.read_bytes().decode("latin-1")) for p in paths if p.exists()]
    return [(where, text) for where, text in texts if text]
