"""``GET /v1/batches``: the org's batches as the gateway recorded them, unfinished ones refreshed.

The list comes from the ledger (the provider account is shared by every org using the
deployment: its own list would show other orgs' batches), newest first, paged with OpenAI's
``after`` / ``limit`` (1..100, default 20) / ``has_more`` / ``first_id`` / ``last_id``. Batches not
yet finished are asked for again at their deployment, a few at a time and within a few
seconds overall; one that cannot be refreshed (deployment gone, provider down, too slow) is
shown as last recorded. A refresh that finds a batch finished settles it (``batch_usage.py``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from data_plane.errors import GatewayError
from data_plane.objects.batch_sync import parse_batch, side_call, side_get, synced
from data_plane.objects.batch_usage import finished
from data_plane.objects.call import Call, valid_object_id
from data_plane.objects.errors import ledger_unavailable
from data_plane.objects.ledger import Kind, LedgerUnavailable, OwnedObject
from data_plane.objects.listing import parse_limit, snapshot_json
from data_plane.objects.pinned import locate_object, object_path

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
REFRESH_CONCURRENCY = 4
REFRESH_SECONDS = 5.0


def stored(obj: OwnedObject) -> dict[str, Any]:
    """The batch as last recorded (a minimal object when no snapshot could be kept)."""
    doc = parse_batch(obj.snapshot, obj.id)
    if doc is not None:
        return doc
    return snapshot_json(obj)


async def _refresh(call: Call, obj: OwnedObject, gate: asyncio.Semaphore) -> dict[str, Any] | None:
    async with gate:
        side = side_call(call)
        try:
            route, dep = await locate_object(side, obj)
        except GatewayError:
            return None  # the deployment is gone or the key may no longer use the model: as recorded
        batch = parse_batch(await side_get(side, route, dep, object_path("batches", obj.id)), obj.id)
        if batch is not None:
            await synced(side, obj, route, dep, batch)
        return batch


async def refresh_all(call: Call, objs: list[OwnedObject], docs: list[dict[str, Any]]) -> None:
    """Replace the unfinished ones of ``docs`` by their deployments' answers, within the time bound."""
    gate = asyncio.Semaphore(REFRESH_CONCURRENCY)
    tasks = {
        asyncio.ensure_future(_refresh(call, obj, gate)): i
        for i, (obj, doc) in enumerate(zip(objs, docs, strict=True))
        if not finished(doc) or not obj.usage_recorded
    }
    if not tasks:
        return
    left = call.deadline - asyncio.get_running_loop().time()
    done, pending = await asyncio.wait(tasks, timeout=max(0.0, min(REFRESH_SECONDS, left)))
    for task in pending:
        task.cancel()
    for task in done:
        if not task.cancelled() and task.exception() is None and (fresh := task.result()) is not None:
            docs[tasks[task]] = fresh


async def list_batches(call: Call) -> dict[str, Any]:
    """The org's page of batches in OpenAI's list shape."""
    query = call.request.query
    limit = parse_limit(query, DEFAULT_LIMIT, MAX_LIMIT)
    after = query.get("after", "")
    if after and not valid_object_id(after):
        return _page([], False)  # a cursor no batch can have: nothing after it
    try:
        page = await call.ledger.list(call.grant.org_id, Kind.BATCH, after=after, limit=limit)
    except LedgerUnavailable:
        raise ledger_unavailable() from None
    objs = list(page.objects)
    docs = [stored(obj) for obj in objs]
    await refresh_all(call, objs, docs)
    return _page(docs, page.has_more)


def _page(docs: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": docs,
        "first_id": docs[0]["id"] if docs else None,
        "last_id": docs[-1]["id"] if docs else None,
        "has_more": has_more,
    }


__all__ = ["list_batches", "refresh_all", "stored"]
