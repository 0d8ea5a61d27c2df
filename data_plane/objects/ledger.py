"""What the files and batches handlers need to know of ownership: the ``Ledger`` protocol.

An object belongs to the organisation whose key created it. Another organisation asking
for it gets exactly what a missing object gets (``None`` / absent from lists), so ids
cannot be probed. The implementation talks to the control plane over gRPC
(``grpc_ledger.py``); tests may use an in-memory one with the same semantics.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from odock.v1 import node_pb2

MAX_SNAPSHOT_BYTES = 64 * 1024
MAX_OBJECT_ID = 128


class Kind(IntEnum):
    FILE = node_pb2.OBJECT_KIND_FILE
    BATCH = node_pb2.OBJECT_KIND_BATCH


@dataclass(frozen=True, slots=True)
class OwnedObject:
    """A provider object and its owner (the control plane's ``ProviderObject``)."""

    kind: Kind
    id: str  # the provider's id
    org_id: str
    key_id: str  # the key that created it
    model_name: str  # the gateway model whose deployment holds it
    deployment: str  # that deployment's name
    purpose: str  # files: their purpose; batches: the batch's endpoint
    created_at: int  # the provider's created_at, unix seconds
    snapshot: bytes = b""  # the provider's latest JSON of it (<= MAX_SNAPSHOT_BYTES)
    usage_recorded: bool = False


@dataclass(frozen=True, slots=True)
class Page:
    objects: tuple[OwnedObject, ...]
    has_more: bool


class LedgerUnavailable(Exception):
    """The control plane could not be asked (the handler answers 503 control_plane_unavailable)."""


class Ledger(Protocol):
    """Ownership of provider objects, per organisation."""

    async def put(self, obj: OwnedObject) -> OwnedObject | None:
        """Record a new object or refresh an owned one's snapshot; None when another org owns the id."""
        ...

    async def get(self, org_id: str, kind: Kind, object_id: str) -> OwnedObject | None:
        """The org's object, or None (missing, deleted, or another org's)."""
        ...

    async def list(
        self, org_id: str, kind: Kind, *, purpose: str = "", after: str = "", limit: int = 20, ascending: bool = False
    ) -> Page:
        """The org's objects of ``kind``, newest first unless ``ascending``; ``after`` is an id cursor."""
        ...

    async def delete(self, org_id: str, kind: Kind, object_id: str) -> OwnedObject | None:
        """Forget the org's object; None when it was not the org's."""
        ...

    async def claim_batch_usage(self, org_id: str, batch_id: str) -> bool:
        """True for exactly one caller per batch (that caller records its usage)."""
        ...
