"""Lists of an organisation's files or batches, from the ledger, in OpenAI's list shape and paging.

The gateway's record of what the org created answers (the provider's list would show every
org's objects of the deployment's account): ``{"object": "list", "data", "first_id",
"last_id", "has_more"}``, ``after`` an id cursor, ``limit`` bounded. Each object is the
provider's JSON as last seen through the gateway (its snapshot).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from data_plane.errors import GatewayError
from data_plane.objects.call import Call, valid_object_id
from data_plane.objects.errors import ledger_unavailable
from data_plane.objects.ledger import Kind, LedgerUnavailable, OwnedObject

_OBJECT_NAMES = {Kind.FILE: "file", Kind.BATCH: "batch"}


def _invalid(name: str, message: str) -> GatewayError:
    return GatewayError(400, "invalid_parameter", message, param=name)


def parse_limit(query: Mapping[str, str], default: int, maximum: int) -> int:
    """The page size: absent, empty or 0 is ``default``, above ``maximum`` is ``maximum`` (a page is
    never refused for its size: openai-python's own tests send ``limit=0``); not a number is a 400."""
    raw = query.get("limit")
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit():
        raise _invalid("limit", f"'limit' must be an integer from 1 to {maximum}")
    digits = raw.lstrip("0") or "0"
    limit = int(digits) if len(digits) <= 12 else maximum  # never int() of a huge string
    return default if limit == 0 else min(limit, maximum)


def parse_order(query: Mapping[str, str]) -> bool:
    """Whether the list is ascending (``order=asc``); OpenAI's default is ``desc``."""
    order = query.get("order", "desc") or "desc"
    if order not in ("asc", "desc"):
        raise _invalid("order", "'order' must be 'asc' or 'desc'")
    return order == "asc"


def snapshot_json(obj: OwnedObject) -> dict[str, Any]:
    """The provider's JSON of ``obj`` as last seen, or the fields the ledger knows when it is unreadable."""
    if obj.snapshot:
        try:
            doc = json.loads(obj.snapshot)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            return doc
    # Only the fields the ledger knows are true; the rest are what a client's strict validation
    # needs (openai-python's FileObject / Batch require them), marked unknown where they can be.
    fallback: dict[str, Any] = {"id": obj.id, "object": _OBJECT_NAMES[obj.kind], "created_at": obj.created_at}
    if obj.kind == Kind.FILE:
        fallback |= {"purpose": obj.purpose, "bytes": 0, "filename": "", "status": "processed"}
    else:
        fallback |= {"endpoint": obj.purpose, "input_file_id": "", "completion_window": "24h", "status": "in_progress"}
    return fallback


async def list_page(
    call: Call, kind: Kind, query: Mapping[str, str], *, default_limit: int, max_limit: int,
    purpose: str = "", ordered: bool = True,
) -> tuple[list[OwnedObject], dict[str, Any]]:  # fmt: skip
    """The org's objects of ``kind`` for the query (``after``, ``limit``, and ``order`` when ``ordered``)
    and the list document; an ``after`` that cannot be an id gives an empty page (like an unknown one)."""
    limit = parse_limit(query, default_limit, max_limit)
    ascending = parse_order(query) if ordered else False
    after = query.get("after", "")
    if after and not valid_object_id(after):
        objects: list[OwnedObject] = []
        has_more = False
    else:
        try:
            page = await call.ledger.list(
                call.grant.org_id, kind, purpose=purpose, after=after, limit=limit, ascending=ascending
            )
        except LedgerUnavailable:
            raise ledger_unavailable() from None
        objects, has_more = list(page.objects), page.has_more
    data = [snapshot_json(o) for o in objects]
    doc = {
        "object": "list",
        "data": data,
        "first_id": objects[0].id if objects else None,
        "last_id": objects[-1].id if objects else None,
        "has_more": has_more,
    }
    return objects, doc
