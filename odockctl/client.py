"""A thin synchronous gRPC client: one channel, the admin token on every
call, errors turned into one-line CliErrors, org references resolved."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from odock.v1 import (
    admin_tokens_pb2_grpc,
    credentials_pb2_grpc,
    keys_pb2_grpc,
    models_pb2_grpc,
    orgs_pb2,
    orgs_pb2_grpc,
)
from odockctl.errors import RemoteError, UsageError, from_rpc_error

ResponseT = TypeVar("ResponseT", bound=Message)
ItemT = TypeVar("ItemT")
_ORG_ID_RE = re.compile(r"org_[a-z2-7]{26}")
_PAGE_SIZE = 500


@dataclass(frozen=True)
class Connection:
    """Where and how to reach the control plane."""

    address: str
    token: str
    timeout: float
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None


def shown_ref(ref: str, limit: int = 64) -> str:
    """A name or id as quoted in a NOT_FOUND line: printable and short (whatever was typed)."""
    text = "".join(c if c.isprintable() else "?" for c in ref[: limit + 1])
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _read(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{flag}: cannot read {path}: {exc.strerror or exc}") from None


_PORT_RE = re.compile(r":(\d+)$")


def check_address(address: str) -> None:
    """Refuse a HOST:PORT whose port is outside 1..65535 (gRPC silently wraps it to another port)."""
    match = _PORT_RE.search(address)
    if match is not None and not 1 <= int(match.group(1)) <= 65535:
        raise UsageError(f"--address: port {match.group(1)[:12]} is out of range (1-65535)")


def open_channel(conn: Connection) -> grpc.Channel:
    """A plaintext channel, or TLS when a CA (or client certificate) is given."""
    check_address(conn.address)
    if conn.tls_ca_file or conn.tls_cert_file:
        if bool(conn.tls_cert_file) != bool(conn.tls_key_file):
            raise UsageError("--tls-cert and --tls-key must be given together")
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read(conn.tls_ca_file, "--tls-ca") if conn.tls_ca_file else None,
            private_key=_read(conn.tls_key_file, "--tls-key") if conn.tls_key_file else None,
            certificate_chain=_read(conn.tls_cert_file, "--tls-cert") if conn.tls_cert_file else None,
        )
        return grpc.secure_channel(conn.address, creds)
    return grpc.insecure_channel(conn.address)


class Client:
    """Stubs for every admin service plus error mapping and org resolution."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.channel = open_channel(conn)
        self.orgs = orgs_pb2_grpc.OrgServiceStub(self.channel)
        self.credentials = credentials_pb2_grpc.CredentialServiceStub(self.channel)
        self.models = models_pb2_grpc.ModelServiceStub(self.channel)
        self.keys = keys_pb2_grpc.VirtualKeyServiceStub(self.channel)
        self.tokens = admin_tokens_pb2_grpc.AdminTokenServiceStub(self.channel)
        self._org_cache: dict[str, orgs_pb2.Org] = {}

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def call(self, method: Callable[..., Any], request: Message) -> Any:
        """Invoke one unary RPC with the token and deadline; map failures."""
        try:
            return method(
                request,
                timeout=self.conn.timeout,
                metadata=(("authorization", f"Bearer {self.conn.token}"),),
            )
        except grpc.RpcError as err:
            raise from_rpc_error(err, self.conn.address) from None

    def pages(
        self,
        method: Callable[..., Any],
        make_request: Callable[[str, int], Message],
        items: Callable[[Any], Iterator[ItemT]],
    ) -> list[ItemT]:
        """Every item of a paginated list RPC (bounded by a sanity cap on pages)."""
        out: list[ItemT] = []
        token = ""
        for _ in range(100_000):
            response = self.call(method, make_request(token, _PAGE_SIZE))
            out.extend(items(response))
            token = response.next_page_token
            if not token:
                return out
        raise RemoteError("list did not terminate (page token never became empty)")

    def find_org(self, ref: str) -> orgs_pb2.Org | None:
        """The org named or identified by ``ref``, or None when it does not exist."""
        if ref in self._org_cache:
            return self._org_cache[ref]
        requests = [orgs_pb2.GetOrgRequest(name=ref)]
        # An id-shaped ref is tried as an id first; names may look like ids too.
        if _ORG_ID_RE.fullmatch(ref):
            requests.insert(0, orgs_pb2.GetOrgRequest(id=ref))
        for request in requests:
            try:
                org: orgs_pb2.Org = self.call(self.orgs.GetOrg, request)
            except RemoteError as err:
                if err.code == grpc.StatusCode.NOT_FOUND:
                    continue
                raise
            self._org_cache[ref] = org
            return org
        return None

    def org(self, ref: str) -> orgs_pb2.Org:
        """The org named or identified by ``ref``; NOT_FOUND as a one-line error."""
        org = self.find_org(ref)
        if org is None:
            raise RemoteError(f"NOT_FOUND: org {shown_ref(ref)} does not exist", grpc.StatusCode.NOT_FOUND)
        return org

    def org_id(self, ref: str) -> str:
        """The id of the org named or identified by ``ref``."""
        return self.org(ref).id
