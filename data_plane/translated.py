"""OpenAI-format access to another family's model: ``POST /v1/chat/completions`` translated (issue 13).

The native handler (``native.py``) authorizes the key, reads and inspects the body, resolves the
model and, only when the route's family differs from OpenAI's, asks :func:`translator_for`:
a route that opted in (``openai_compatible``) and whose family has a translator
(``providers.TRANSLATORS``) is served here instead of being refused. Nothing here runs for a
native request.

Here: the body is parsed once (orjson), the family's :class:`ChatTranslator` builds the native
call, which goes upstream with the backend dialect's auth and headers (``translated_relay.py``),
and every answer the client sees is OpenAI's shape. Governance is the native path's: the same
grant, the same admission (estimated as an OpenAI chat request), exactly one usage record, which
reads the NATIVE answer with the backend endpoint's usage shape, names the backend family and
carries ``FLAG_TRANSLATED``.

``n > 1``: Gemini takes it (``candidateCount``, one call); Anthropic has no ``n``, so the gateway
makes ``n`` calls at once (``n <= MAX_N``), indexes the choices and sums the usage; streamed, the
``n`` streams are interleaved (``translated_fanout.py``; docs/openai-compatibility.md).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import web

from data_plane.errors import GatewayError
from data_plane.exchange import Exchange
from data_plane.governance.domain import Route
from data_plane.providers import ANTHROPIC, DIALECTS, GEMINI, TRANSLATORS, endpoint_named
from data_plane.providers.headers import build_headers
from data_plane.providers.translator import (
    ChatRequest,
    ChatTranslator,
    ReplyIds,
    TranslatedModel,
    TranslationError,
    UpstreamCall,
)
from data_plane.scrub import secret_for
from data_plane.state import NodeState
from data_plane.translated_fanout import stream_choices, sum_counts
from data_plane.translated_relay import Answer, TranslatedRelay, upstream_url
from data_plane.upstream.egress import EGRESS
from data_plane.usage.meter import COMPLETE, RequestMeter
from data_plane.usage.shapes import NO_USAGE
from data_plane.usage.tokens import Usage, make_usage

# The most choices one request may ask for (Anthropic: that many upstream calls at once).
MAX_N = 8
# Families without ``n``: the gateway fans out.
_FAN_OUT = frozenset({ANTHROPIC})
# Each backend's native generation endpoint: its usage shape reads the native answer.
_NATIVE_ENDPOINTS: dict[int, str] = {
    ANTHROPIC: "/v1/messages",
    GEMINI: "/v1beta/models/{model}:generateContent",
}
_STREAM_ENDPOINTS: dict[int, str] = {GEMINI: "/v1beta/models/{model}:streamGenerateContent"}


def translator_for(route: Route) -> ChatTranslator | None:
    """The translator serving ``route`` on OpenAI's chat endpoint (None: the native rule applies)."""
    if not route.openai_compatible:
        return None
    return TRANSLATORS.get(route.family)


def _bad_request(message: str, param: str | None, code: str = "invalid_request_error") -> GatewayError:
    return GatewayError(400, code, message, param=param)


def parse_chat(body: bytes) -> ChatRequest:
    """The client's body as a :class:`ChatRequest` (its JSON was already checked by ``inspect_json``)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _bad_request("request body is not valid JSON", None, "invalid_json") from None
    if not isinstance(doc, dict):
        raise _bad_request("request body must be a JSON object", None, "invalid_json")
    stream = doc.get("stream") is True
    options = doc.get("stream_options")
    include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    return ChatRequest(body=doc, stream=stream, include_usage=include_usage)


def choices_asked(chat: ChatRequest) -> int:
    """The request's ``n`` (1 when absent), 400 outside 1..MAX_N."""
    n = chat.body.get("n", 1)
    if n is None:
        return 1
    if type(n) is not int or not 1 <= n <= MAX_N:
        raise _bad_request(f"'n' must be an integer from 1 to {MAX_N}", "n")
    return n


def check_stream_options(chat: ChatRequest) -> None:
    """OpenAI's rule: ``stream_options`` (not null) only with ``stream: true``, and an object."""
    options = chat.body.get("stream_options")
    if options is None:
        return
    if not chat.stream:
        raise _bad_request(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options"
        )
    if not isinstance(options, dict):
        raise _bad_request("'stream_options' must be an object", "stream_options")


def prepare_meter(meter: RequestMeter, route: Route, streaming: bool, metering: bool) -> None:
    """The record of a translated request: the backend's usage shape (``native.py`` already named
    the backend's family and set ``FLAG_TRANSLATED`` once the route was known)."""
    meter.streamed = streaming
    name = _STREAM_ENDPOINTS.get(route.family) if streaming else None
    name = name or _NATIVE_ENDPOINTS.get(route.family)
    meter.shape = endpoint_named(name).usage if metering and name is not None else NO_USAGE


async def serve(
    request: web.Request,
    ex: Exchange,
    state: NodeState,
    meter: RequestMeter,
    route: Route,
    translator: ChatTranslator,
    body: bytes,
    deadline: float,
) -> web.StreamResponse:
    """Serve one translated chat completion (GatewayError for what the gateway refuses itself)."""
    settings = state.settings
    chat = parse_chat(body)
    n = choices_asked(chat)
    check_stream_options(chat)
    fan_out = n > 1 and route.family in _FAN_OUT
    model = TranslatedModel(
        name=route.model_name,
        slug=route.upstream_slug,
        max_output_tokens=route.max_output_tokens,
        capabilities=route.capabilities,
    )
    try:
        call = translator.request(chat, model)
    except TranslationError as exc:
        raise _bad_request(exc.message, exc.param, exc.code) from None
    prepare_meter(meter, route, call.stream, settings.usage.metering)
    try:
        url = upstream_url(route.base_url, call.path)
    except ValueError:
        raise GatewayError(
            502, "upstream_misconfigured", "The model's upstream address is not usable"
        ) from None
    try:
        headers = build_headers(DIALECTS[route.family], request.headers.items(), route.secret)
    except (ValueError, UnicodeDecodeError):
        raise GatewayError(
            502, "credential_unavailable", "The model's provider credential cannot be used right now"
        ) from None
    headers["Content-Type"] = "application/json"
    ids = ReplyIds(id="chatcmpl-" + ex.record_id, created=int(time.time()), model=route.model_name)
    relay = TranslatedRelay(
        request,
        meter,
        state.transport,
        translator,
        secret_for(route.secret),
        first_byte_timeout=route.timeout,
        upstream_idle=settings.timeouts.upstream_idle,
        deadline=deadline,
        max_buffered=settings.max_buffered_response_bytes,
        max_sse_event=settings.max_sse_event_bytes,
    )
    EGRESS.set(route.egress)  # checked on each new upstream connection (upstream/egress.py)
    if call.stream:
        if fan_out:
            return await stream_choices(relay, url, headers, call, ids, chat.include_usage, n)
        return await relay.stream(url, headers, call, ids, chat.include_usage)
    if not fan_out:
        answer = await relay.answer(url, headers, call, ids)
        return relay.respond(answer, meter_usage=True)
    return await _fan_out(relay, url, headers, call, ids, n)


async def _fan_out(
    relay: TranslatedRelay, url: str, headers: dict[str, str], call: UpstreamCall, ids: ReplyIds, n: int
) -> web.StreamResponse:
    """``n`` calls at once; the first error answers, else the choices merged and the usage summed.

    What every call that answered consumed is metered, whichever way the others end (an error
    answer, a timeout, an answer that cannot be translated, the client gone).
    """
    answered: list[Answer] = []
    tasks = [asyncio.ensure_future(relay.answer(url, headers, call, ids, answered)) for _ in range(n)]
    try:
        answers = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # every upstream answer released
        _meter_answered(relay.meter, answered)
        raise
    _meter_answered(relay.meter, answered)
    for answer in answers:
        if answer.error is not None:
            return relay.respond(answer, meter_usage=False)
    merged = merge_answers([a.document for a in answers if a.document is not None])
    relay.meter.settle(200, COMPLETE)
    return relay.json_response(200, merged)


def _meter_answered(meter: RequestMeter, answered: list[Answer]) -> None:
    """The summed native usage of the calls that answered 2xx (malformed when one's is unreadable)."""
    native = [a.usage for a in answered if a.usage is not None]
    if native:
        meter.report(_sum_usage(native), final=True)
    if len(native) < len(answered):
        meter.malformed()


def _sum_usage(parts: list[Usage]) -> Usage:
    total = make_usage(
        input=sum(u.input for u in parts),
        output=sum(u.output for u in parts),
        cached=sum(u.cached for u in parts),
        reasoning=sum(u.reasoning for u in parts),
        parts=False,
    )
    return (
        total
        if not any(u.clamped for u in parts)
        else Usage(total.input, total.output, total.cached, total.reasoning, clamped=True)
    )


def merge_answers(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """``chat.completion`` objects of one request -> one, choices indexed in order, usage summed."""
    merged = dict(documents[0])
    choices: list[Any] = []
    for doc in documents:
        for choice in doc.get("choices") or ():
            choices.append({**choice, "index": len(choices)})
    merged["choices"] = choices
    merged["usage"] = sum_counts([d.get("usage") for d in documents])
    return merged


__all__ = ["MAX_N", "choices_asked", "merge_answers", "parse_chat", "serve", "translator_for"]
