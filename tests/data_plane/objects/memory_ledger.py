"""An in-memory :class:`~data_plane.objects.ledger.Ledger` with the control plane's semantics.

Another org's object is indistinguishable from a missing one; lists are newest first by
(created_at, id) unless ascending, ``after`` an id of the org's (an unknown cursor: an empty
page); ``claim_batch_usage`` is true once per batch. ``down`` makes every call fail as an
unreachable control plane does.
"""

from __future__ import annotations

import dataclasses

from data_plane.objects.ledger import Kind, LedgerUnavailable, OwnedObject, Page


class MemoryLedger:
    def __init__(self) -> None:
        self.objects: dict[tuple[Kind, str], OwnedObject] = {}
        self.down = False
        self.calls: list[str] = []

    def _check(self, name: str) -> None:
        self.calls.append(name)
        if self.down:
            raise LedgerUnavailable("control plane unreachable")

    async def put(self, obj: OwnedObject) -> OwnedObject | None:
        self._check("put")
        key = (obj.kind, obj.id)
        old = self.objects.get(key)
        if old is not None:
            if old.org_id != obj.org_id:
                return None
            obj = dataclasses.replace(
                old, snapshot=obj.snapshot, purpose=obj.purpose or old.purpose, created_at=obj.created_at
            )
        self.objects[key] = obj
        return obj

    async def get(self, org_id: str, kind: Kind, object_id: str) -> OwnedObject | None:
        self._check("get")
        obj = self.objects.get((kind, object_id))
        return obj if obj is not None and obj.org_id == org_id else None

    async def list(
        self, org_id: str, kind: Kind, *, purpose: str = "", after: str = "", limit: int = 20, ascending: bool = False
    ) -> Page:
        self._check("list")
        mine = [
            o for o in self.objects.values()
            if o.kind == kind and o.org_id == org_id and (not purpose or o.purpose == purpose)
        ]  # fmt: skip
        mine.sort(key=lambda o: (o.created_at, o.id), reverse=not ascending)
        if after:
            ids = [o.id for o in mine]
            if after not in ids:
                return Page((), False)
            mine = mine[ids.index(after) + 1 :]
        return Page(tuple(mine[:limit]), len(mine) > limit)

    async def delete(self, org_id: str, kind: Kind, object_id: str) -> OwnedObject | None:
        self._check("delete")
        obj = self.objects.get((kind, object_id))
        if obj is None or obj.org_id != org_id:
            return None
        del self.objects[(kind, object_id)]
        return obj

    async def claim_batch_usage(self, org_id: str, batch_id: str) -> bool:
        self._check("claim")
        obj = self.objects.get((Kind.BATCH, batch_id))
        if obj is None or obj.org_id != org_id or obj.usage_recorded:
            return False
        self.objects[(Kind.BATCH, batch_id)] = dataclasses.replace(obj, usage_recorded=True)
        return True
