"""OpenAI's Files API through the gateway: upload, list, retrieve, delete, content (docs/files-and-batches.md).

A file is uploaded to one deployment of one model (the model: a batch file's lines name it,
else the form's ``model`` field, else the key's default model for ``/v1/files``) and recorded
in the ledger as the uploading key's organisation's. Every later call on it checks the
ledger first (another org's id answers exactly like a missing one, the upstream never called)
and then goes to the deployment holding it (``pinned.py``). Lists come from the ledger.
Every request is authenticated and metered like a native one (a record without tokens).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from data_plane import attempts
from data_plane.errors import GatewayError, clip
from data_plane.governance.domain import Deployment, Route
from data_plane.limits.gate import admit_request
from data_plane.native import resolve
from data_plane.objects import batch_input
from data_plane.objects.call import Call, begin, owned
from data_plane.objects.created import record_new
from data_plane.objects.errors import ledger_unavailable
from data_plane.objects.ledger import MAX_SNAPSHOT_BYTES, Kind, LedgerUnavailable, OwnedObject
from data_plane.objects.listing import list_page
from data_plane.objects.pinned import (
    answer,
    locate_object,
    object_path,
    open_upstream,
    read_answer,
    read_whole,
    relay_answer,
    scrubbed,
)  # fmt: skip
from data_plane.objects.upload import Form, Spool, receive_form, spool_error, upstream_form
from data_plane.providers import OPENAI, Endpoint
from data_plane.providers.endpoint import BodyKind, ModelIn
from data_plane.usage.meter import COMPLETE

log = logging.getLogger("odock.data_plane.files")

PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
FORWARDED_FIELDS = ("purpose", "expires_after[anchor]", "expires_after[seconds]")
MAX_PURPOSE = 64  # the list filter (any string: batch outputs are recorded as "batch_output")
LIST_MAX = 10_000  # OpenAI's bounds and default for GET /v1/files
# The multipart framing around the file: declared bodies up to the file limit plus this are read.
FORM_OVERHEAD = 1024 * 1024


def _endpoint(method: str, route: str, name: str, body: BodyKind = "none", model_in: ModelIn = "none") -> Endpoint:
    return Endpoint(
        family=OPENAI, method=method, route=route, name=name, body=body, model_in=model_in, streams="never",
        upstream_path=route.removeprefix("/v1"), output=False,
    )  # fmt: skip


UPLOAD = _endpoint("POST", "/v1/files", "/v1/files", "multipart", "form")
LIST = _endpoint("GET", "/v1/files", "/v1/files:list")
RETRIEVE = _endpoint("GET", "/v1/files/{file_id}", "/v1/files/{file_id}")
DELETE = _endpoint("DELETE", "/v1/files/{file_id}", "/v1/files/{file_id}:delete")
CONTENT = _endpoint("GET", "/v1/files/{file_id}/content", "/v1/files/{file_id}/content")


def upload_limit(settings_max: int, batch_max: int, form: Form) -> int:
    """The file part's size limit once ``form``'s fields are known (a batch input file has its own)."""
    return min(settings_max, batch_max) if form.fields.get("purpose") == "batch" else settings_max


async def _admit(call: Call, endpoint: Endpoint, route: Route) -> None:
    limiter = call.state.limiter
    if limiter is not None:
        call.ex.admission = await admit_request(
            limiter, call.state.settings.limits, call.grant, endpoint, None, None, route.pricing
        )


def _pick(call: Call, route: Route) -> Deployment:
    """The deployment a new file goes to: the routing plan's first choice (no retry: the file lives there)."""
    plan = call.state.health.plan(route)
    try:
        dep = plan.next()
        if dep is None:
            raise attempts.no_deployment(call.state.health, plan.cooling_until())
        return dep
    finally:
        plan.finish()


def _missing_model() -> GatewayError:
    return GatewayError(
        400, "missing_model",
        "The upload does not name a model, which decides where the file is stored: send a 'model' form field "
        "(openai SDK: extra_body={'model': ...}), or give the key a default model for /v1/files; "
        "a batch input file's lines name theirs (body.model)",
        param="model",
    )  # fmt: skip


def _line_error(exc: batch_input.BatchLineError) -> GatewayError:
    return GatewayError(400, "invalid_batch_file", exc.message, param="file")


async def upload(request: web.Request) -> web.StreamResponse:
    """``POST /v1/files``."""
    call = await begin(request, UPLOAD)
    settings = call.state.settings
    max_file = settings.max_upload_bytes
    length = request.content_length
    if length is not None and length > max_file + FORM_OVERHEAD:
        raise GatewayError(413, "request_too_large", f"The file exceeds the limit of {max_file} bytes", close=True)
    async with Spool(settings.upload_dir) as spool:
        form = await receive_form(
            request, spool, settings.timeouts,
            lambda f: upload_limit(max_file, settings.max_batch_file_bytes, f),
        )  # fmt: skip
        purpose = form.fields.get("purpose", "")
        if purpose not in PURPOSES:
            raise GatewayError(
                400, "invalid_purpose", f"'purpose' must be one of {', '.join(sorted(PURPOSES))}", param="purpose"
            )
        assert form.file is not None
        if purpose == "batch":
            return await _upload_batch(call, form, spool)
        model = form.fields.get("model") or call.grant.default_models.get(UPLOAD.name)
        if not model:
            raise _missing_model()
        call.meter.model_name = model[:256]
        route = await resolve(call.state, call.grant, model, OPENAI)
        return await _send(call, form, route, spool.path, form.file.size, purpose)


async def _upload_batch(call: Call, form: Form, spool: Spool) -> web.StreamResponse:
    """A batch input file: its model from its lines, every line checked and rewritten (a second spool)."""
    try:
        line, model = await asyncio.to_thread(_first_model, spool.path)
    except batch_input.BatchLineError as exc:
        raise _line_error(exc) from None
    except OSError as exc:
        raise spool_error(exc) from None
    call.meter.model_name = model[:256]
    try:
        route = await resolve(call.state, call.grant, model, OPENAI)
    except GatewayError as err:
        if err.status >= 500:
            raise
        raise GatewayError(err.status, err.code, f"Line {line}: {err.message}", param="file") from None
    dep = _pick(call, route)
    async with Spool(call.state.settings.upload_dir) as rewritten:
        try:
            await asyncio.to_thread(_rewrite, spool.path, rewritten, model, dep.upstream_slug)
        except batch_input.BatchLineError as exc:
            raise _line_error(exc) from None
        except OSError as exc:
            raise spool_error(exc) from None
        assert form.file is not None
        return await _send(call, form, route, rewritten.path, rewritten.size, "batch", dep)


def _first_model(path: str) -> tuple[int, str]:
    with open(path, "rb") as src:
        return batch_input.first_model(src)


def _rewrite(path: str, spool: Spool, model: str, slug: str) -> None:
    """The checked, rewritten lines into ``spool`` (a worker thread's job: blocking reads and writes)."""
    with open(path, "rb") as src, open(spool.path, "wb", buffering=1024 * 1024) as dst:
        batch_input.rewrite(src, dst, model, slug)
        dst.flush()
        spool.size = dst.tell()


async def _send(
    call: Call, form: Form, route: Route, path: str, size: int, purpose: str, dep: Deployment | None = None
) -> web.StreamResponse:
    if dep is None:
        dep = _pick(call, route)
    await _admit(call, UPLOAD, route)
    assert form.file is not None
    fields = [(name, form.fields[name]) for name in FORWARDED_FIELDS if name in form.fields]
    content_type, body = upstream_form(fields, form.file, path, size)
    relay, upstream = await open_upstream(
        call, route, dep, "POST", "/files", body=body, content_type=content_type, sending_body=True
    )
    read = await read_whole(relay, upstream)
    if not isinstance(read, bytes):
        return read
    if 200 <= upstream.status < 300:
        await _record(call, route, dep, purpose, scrubbed(relay, read))
    return answer(relay, upstream, read)


async def _record(call: Call, route: Route, dep: Deployment, purpose: str, snapshot: bytes) -> None:
    """The new file recorded as the org's (before the client hears of it: an unrecorded file is unreachable)."""
    doc = _json(snapshot)
    file_id = doc.get("id") if doc is not None else None
    if not isinstance(file_id, str) or not file_id:
        raise GatewayError(502, "upstream_invalid_answer", "The provider's answer to the upload names no file id")
    created = doc.get("created_at") if doc is not None else None
    obj = OwnedObject(
        kind=Kind.FILE, id=file_id[:128], org_id=call.grant.org_id, key_id=call.grant.key_id,
        model_name=route.model_name, deployment=dep.name, purpose=purpose,
        created_at=created if isinstance(created, int) and created >= 0 else 0,
        snapshot=snapshot if len(snapshot) <= MAX_SNAPSHOT_BYTES else b"",
    )  # fmt: skip
    try:  # taken back by the provider's whole id (the ledger's is clipped)
        stored = await record_new(call, obj, route, dep, "DELETE", object_path("files", file_id))
    except LedgerUnavailable:
        raise ledger_unavailable() from None
    if stored is None:
        log.warning("file %s: the provider returned an id the ledger gives to another organisation", clip(file_id))
        raise GatewayError(502, "object_conflict", "The provider returned a file id already recorded elsewhere")


def _json(data: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


async def list_files(request: web.Request) -> web.StreamResponse:
    """``GET /v1/files``: the org's files (purpose, after, limit 1..10000 default 10000, order)."""
    call = await begin(request, LIST)
    query = request.query
    purpose = query.get("purpose", "")
    if len(purpose) > MAX_PURPOSE or not purpose.isprintable():
        raise GatewayError(400, "invalid_parameter", f"'purpose' is at most {MAX_PURPOSE} characters", param="purpose")
    _, doc = await list_page(call, Kind.FILE, query, default_limit=LIST_MAX, max_limit=LIST_MAX, purpose=purpose)
    call.meter.settle(200, COMPLETE)
    return web.json_response(doc)


async def retrieve(request: web.Request) -> web.StreamResponse:
    """``GET /v1/files/{file_id}``: the provider's object (the ledger's snapshot refreshed)."""
    call = await begin(request, RETRIEVE)
    obj = await owned(call, Kind.FILE, request.match_info["file_id"])
    route, dep = await locate_object(call, obj)
    await _admit(call, RETRIEVE, route)
    relay, upstream = await open_upstream(call, route, dep, "GET", object_path("files", obj.id))
    response, body = await read_answer(relay, upstream)
    if body is not None and len(body) <= MAX_SNAPSHOT_BYTES:
        try:
            await call.ledger.put(OwnedObject(
                kind=Kind.FILE, id=obj.id, org_id=obj.org_id, key_id=obj.key_id, model_name=obj.model_name,
                deployment=obj.deployment, purpose=obj.purpose, created_at=obj.created_at, snapshot=body,
            ))  # fmt: skip
        except LedgerUnavailable:
            pass  # a refresh only: the stored snapshot stays
    return response


async def delete(request: web.Request) -> web.StreamResponse:
    """``DELETE /v1/files/{file_id}``: deleted at the provider, then forgotten by the ledger."""
    call = await begin(request, DELETE)
    obj = await owned(call, Kind.FILE, request.match_info["file_id"])
    route, dep = await locate_object(call, obj)
    await _admit(call, DELETE, route)
    relay, upstream = await open_upstream(call, route, dep, "DELETE", object_path("files", obj.id))
    response, body = await read_answer(relay, upstream)
    if body is not None:
        try:
            await call.ledger.delete(call.grant.org_id, Kind.FILE, obj.id)
        except LedgerUnavailable:
            # Deleted upstream; the stale record answers the provider's own 404 from now on.
            log.warning("file %s deleted but the ledger could not be told (control plane unreachable)", clip(obj.id))
    return response


async def content(request: web.Request) -> web.StreamResponse:
    """``GET /v1/files/{file_id}/content``: the bytes relayed as they come (files are up to 512 MB)."""
    call = await begin(request, CONTENT)
    obj = await owned(call, Kind.FILE, request.match_info["file_id"])
    route, dep = await locate_object(call, obj)
    await _admit(call, CONTENT, route)
    relay, upstream = await open_upstream(
        call, route, dep, "GET", object_path("files", obj.id, "/content"), streaming=True
    )
    return await relay_answer(relay, upstream, streaming=True)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# (endpoint, handler) for app.py: each served at the endpoint's method and route, observed under its name.
ROUTES: tuple[tuple[Endpoint, Handler], ...] = (
    (UPLOAD, upload),
    (LIST, list_files),
    (RETRIEVE, retrieve),
    (DELETE, delete),
    (CONTENT, content),
)
