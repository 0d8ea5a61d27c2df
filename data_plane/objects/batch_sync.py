"""Keeping the gateway's record of a batch in step with the provider's answers.

Every answer about a batch (create, retrieve, cancel, a list's refresh) refreshes the ledger's
snapshot (what lists show) and, once the batch is finished, settles what it owes
(``batch_usage.settle_finished``). Side calls (a list's refresh, an output file's object) go to
the batch's deployment with a meter of their own that records nothing: the client's request
has its one record.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from data_plane.exchange import Exchange
from data_plane.governance.domain import Deployment, Route
from data_plane.objects.batch_usage import Recorder, settle_finished, snapshot_of
from data_plane.objects.call import Call, outlive_client
from data_plane.objects.ledger import Kind, LedgerUnavailable, OwnedObject
from data_plane.objects.pinned import object_path, open_upstream
from data_plane.state import NodeState
from data_plane.usage.meter import RequestMeter
from data_plane.usage.shapes import NO_USAGE

log = logging.getLogger("odock.data_plane.batches")


def recorder(state: NodeState) -> Recorder:
    """The node's ledger, usage sink and limiter, as batch usage needs them."""
    assert state.ledger is not None  # the handlers asked the ledger before (Call.ledger)
    sink = state.shipper if state.settings.usage.metering else None
    return Recorder(state.ledger, sink, state.limiter, state.settings.node_id)


def parse_batch(answer: bytes | None, batch_id: str = "") -> dict[str, Any] | None:
    """A provider's batch JSON (the one with ``batch_id`` when given), else None."""
    if not answer:
        return None
    try:
        doc = json.loads(answer)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) or not doc["id"]:
        return None
    return doc if not batch_id or doc["id"] == batch_id else None


def side_call(call: Call) -> Call:
    """A call on the same key and deadline whose meter records nothing and whose exchange is its own."""
    ex = call.ex
    meter = RequestMeter(None, request_id=ex.record_id, node_id=call.meter.node_id, org_id=call.grant.org_id,
                         key_id=call.grant.key_id, family=call.meter.family, endpoint=call.meter.endpoint,
                         shape=NO_USAGE)  # fmt: skip
    shadow = Exchange(ex.record_id, ex.request_id, ex.client_request_id)
    return Call(call.request, call.state, call.grant, shadow, meter, call.deadline)


async def side_get(call: Call, route: Route, dep: Deployment, path: str) -> bytes | None:
    """GET ``path`` at ``dep`` on a side call: the scrubbed 2xx body, else None (errors are logged)."""
    side = side_call(call)
    try:
        relay, upstream = await open_upstream(side, route, dep, "GET", path)
        try:
            body = await relay.read_failure(upstream)
        finally:
            upstream.release()
    except Exception as exc:  # noqa: BLE001 - a side call failing leaves what was stored
        log.info("batch side call to %s failed: %s", dep.name[:64], type(exc).__name__)
        return None
    if not 200 <= upstream.status < 300 or len(body) > relay.max_buffered:
        return None
    return relay.secret.bytes(body) if relay.secret is not None else body


async def synced(call: Call, obj: OwnedObject, route: Route, dep: Deployment, batch: dict[str, Any]) -> None:
    """Store ``batch`` as ``obj``'s snapshot and settle it if finished (a ledger outage is logged: the
    next call on the batch does it).

    Shielded: a client going away, or a list's refresh running out of time, must not stop it
    between winning the usage claim and submitting the record (the batch would go unrecorded).
    """
    await outlive_client(_synced(call, obj, route, dep, batch))


async def _synced(call: Call, obj: OwnedObject, route: Route, dep: Deployment, batch: dict[str, Any]) -> None:
    snapshot = snapshot_of(batch)
    ledger = call.ledger
    try:
        if snapshot and snapshot != obj.snapshot:
            await ledger.put(_refreshed(obj, snapshot, batch))

        async def fetch(file_id: str) -> bytes | None:
            return await side_get(call, route, dep, object_path("files", file_id))

        await settle_finished(recorder(call.state), obj, batch, route.pricing, dep.upstream_slug, fetch)
    except LedgerUnavailable:
        log.warning("batch %s: the ledger could not be updated (control plane unreachable); retried on the "
                    "next call", obj.id[:128])  # fmt: skip


def _refreshed(obj: OwnedObject, snapshot: bytes, batch: dict[str, Any]) -> OwnedObject:
    created = batch.get("created_at")
    return OwnedObject(
        kind=Kind.BATCH, id=obj.id, org_id=obj.org_id, key_id=obj.key_id, model_name=obj.model_name,
        deployment=obj.deployment, purpose=obj.purpose,
        created_at=created if isinstance(created, int) and created > 0 else obj.created_at, snapshot=snapshot,
    )  # fmt: skip
