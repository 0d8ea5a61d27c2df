"""OpenAI's Batch API through the gateway: create, retrieve, cancel, list (docs/files-and-batches.md).

A batch runs at the deployment holding its input file (``pinned.py``) and belongs to the
organisation whose key created it: another organisation's key gets the 404 a missing id gets,
before anything reaches the provider, and never sees it in a list (lists come from the ledger).
Each call is authenticated, metered (one record: the call itself, no tokens) and logged like a
native request; creating a batch is admitted against the key's limits like a request (a key or
org over budget cannot start one). The batch's own usage is recorded once, when the gateway
first sees it finished (``batch_usage.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from data_plane.body import check_declared_length, read_body
from data_plane.governance.domain import Deployment, Route
from data_plane.limits.estimate import Estimate
from data_plane.objects.batch_body import invalid, parse_create
from data_plane.objects.batch_list import list_batches
from data_plane.objects.batch_sync import parse_batch, synced
from data_plane.objects.batch_usage import snapshot_of
from data_plane.objects.call import Call, begin, owned
from data_plane.objects.created import record_new
from data_plane.objects.errors import ledger_unavailable
from data_plane.objects.ledger import Kind, LedgerUnavailable, OwnedObject
from data_plane.objects.pinned import locate_object, object_path, open_upstream, read_answer
from data_plane.providers import OPENAI, Endpoint
from data_plane.providers.endpoint import BodyKind
from data_plane.usage.meter import COMPLETE

log = logging.getLogger("odock.data_plane.batches")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _endpoint(method: str, route: str, body: BodyKind = "none", name: str = "") -> Endpoint:
    return Endpoint(family=OPENAI, method=method, route=route, name=name or route, body=body, model_in="none",
                    streams="never", upstream_path="/batches", output=False)  # fmt: skip


# Names (records, metrics, log lines) as the files endpoints name theirs: one per call.
CREATE = _endpoint("POST", "/v1/batches", "json")
LIST = _endpoint("GET", "/v1/batches", name="/v1/batches:list")
RETRIEVE = _endpoint("GET", "/v1/batches/{batch_id}")
CANCEL = _endpoint("POST", "/v1/batches/{batch_id}/cancel")


async def create(request: web.Request) -> web.StreamResponse:
    """``POST /v1/batches``: on the input file's deployment; the batch becomes the org's."""
    call = await begin(request, CREATE)
    settings = call.state.settings
    check_declared_length(request, settings.max_body_bytes)
    body = await read_body(request, settings.max_body_bytes, settings.timeouts)
    ask = parse_create(body)
    source = await owned(call, Kind.FILE, ask.input_file_id)
    if source.purpose != "batch":
        raise invalid(f"File {ask.input_file_id} has purpose '{source.purpose}'; a batch's input file must "
                      "have purpose 'batch'.", "input_file_id")  # fmt: skip
    route, dep = await locate_object(call, source)
    limiter = call.state.limiter
    if limiter is not None:
        # Creating a batch uses no tokens (its work is recorded when it finishes): it counts as a
        # request, and reserves one pico-USD of a priced model so a key or org with nothing left
        # of its budget cannot start one.
        priced = route.pricing.input_per_mtok_micros > 0 or route.pricing.output_per_mtok_micros > 0
        call.ex.admission = await limiter.admit(call.grant, Estimate(tokens=0, picos=1 if priced else 0))
    relay, upstream = await open_upstream(call, route, dep, "POST", "/batches", body=body,
                                          content_type="application/json")  # fmt: skip
    response, answer = await read_answer(relay, upstream)
    batch = parse_batch(answer)
    if batch is None:
        return response  # the provider's refusal (or an answer that is no batch), relayed as is
    created = batch.get("created_at")
    obj = OwnedObject(
        kind=Kind.BATCH, id=batch["id"], org_id=call.grant.org_id, key_id=call.grant.key_id,
        model_name=source.model_name, deployment=source.deployment, purpose=ask.endpoint,
        created_at=created if isinstance(created, int) and created > 0 else 0, snapshot=snapshot_of(batch),
    )  # fmt: skip
    await _record_new(call, obj, route, dep)
    await synced(call, obj, route, dep, batch)  # a batch that failed at once (validation) is settled
    return response


async def _record_new(call: Call, obj: OwnedObject, route: Route, dep: Deployment) -> None:
    """Make the new batch the org's, or cancel it at the provider and answer 503 (created.py)."""
    try:
        stored = await record_new(call, obj, route, dep, "POST", object_path("batches", obj.id, "/cancel"))
    except LedgerUnavailable:
        raise ledger_unavailable() from None
    if stored is None:  # a provider id another org holds: never handed out (nor touched)
        log.error("batch %s: the provider returned an id the ledger gives to another organisation", obj.id[:128])
        raise ledger_unavailable()


async def _on_batch(request: web.Request, endpoint: Endpoint, method: str, suffix: str) -> web.StreamResponse:
    call = await begin(request, endpoint)
    batch_id = request.match_info["batch_id"]
    obj = await owned(call, Kind.BATCH, batch_id)
    route, dep = await locate_object(call, obj)
    limiter = call.state.limiter
    if limiter is not None:  # a call reaching the provider counts against the request rates
        call.ex.admission = await limiter.admit(call.grant, Estimate(tokens=0, picos=0))
    relay, upstream = await open_upstream(call, route, dep, method, object_path("batches", batch_id, suffix))
    response, answer = await read_answer(relay, upstream)
    batch = parse_batch(answer, batch_id)
    if batch is not None:
        await synced(call, obj, route, dep, batch)
    return response


async def retrieve(request: web.Request) -> web.StreamResponse:
    """``GET /v1/batches/{batch_id}``: the org's batch, fresh from its deployment."""
    return await _on_batch(request, RETRIEVE, "GET", "")


async def cancel(request: web.Request) -> web.StreamResponse:
    """``POST /v1/batches/{batch_id}/cancel``: forwarded to the batch's deployment."""
    return await _on_batch(request, CANCEL, "POST", "/cancel")


async def listing(request: web.Request) -> web.StreamResponse:
    """``GET /v1/batches``: the org's batches from the ledger, unfinished ones refreshed."""
    call = await begin(request, LIST)
    page = await list_batches(call)
    call.meter.settle(200, COMPLETE)
    return web.json_response(page)


ROUTES: tuple[tuple[Endpoint, Handler], ...] = (
    (CREATE, create),
    (LIST, listing),
    (RETRIEVE, retrieve),
    (CANCEL, cancel),
)
