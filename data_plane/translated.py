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

from data_plane import attempts
from data_plane.attempts import Fallback
from data_plane.errors import GatewayError
from data_plane.exchange import Exchange
from data_plane.governance.domain import Route
from data_plane.providers import ANTHROPIC, TRANSLATORS
from data_plane.providers.translator import (
    ChatRequest,
    ChatTranslator,
    ReplyIds,
    TranslatedModel,
    TranslationError,
    UpstreamCall,
)
from data_plane.routing import RETRYABLE_STATUSES
from data_plane.scrub import secret_for
from data_plane.state import NodeState
from data_plane.translated_fanout import stream_choices, sum_counts
from data_plane.translated_leg import TranslatedLeg, prepare_meter
from data_plane.translated_relay import Answer, TranslatedRelay
from data_plane.usage.meter import COMPLETE, RequestMeter
from data_plane.usage.tokens import Usage, make_usage

# The most choices one request may ask for (Anthropic: that many upstream calls at once).
MAX_N = 8
# Families without ``n``: the gateway fans out.
_FAN_OUT = frozenset({ANTHROPIC})


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


def leg_for(
    request: web.Request,
    ex: Exchange,
    state: NodeState,
    meter: RequestMeter,
    route: Route,
    translator: ChatTranslator,
    body: bytes,
    deadline: float,
) -> tuple[TranslatedLeg, int]:
    """The leg serving ``route`` for this request, and ``n`` when it fans out (0: one call per attempt).

    The request is checked and translated here (a GatewayError 400 when it cannot be).
    """
    settings = state.settings
    chat = parse_chat(body)
    n = choices_asked(chat)
    check_stream_options(chat)
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
    leg = TranslatedLeg(request, relay, route, translator, chat, ids, call, metering=settings.usage.metering)
    return leg, n if n > 1 and route.family in _FAN_OUT else 0


def fallback_leg(
    request: web.Request, ex: Exchange, state: NodeState, meter: RequestMeter, route: Route, body: bytes,
    deadline: float,
) -> TranslatedLeg | None:  # fmt: skip
    """The leg of a translated fallback model; None when this request cannot go to it (not
    translatable for it, or ``n > 1`` on a family the gateway fans out for: not as a fallback)."""
    translator = translator_for(route)
    if translator is None:
        return None
    try:
        leg, fan_out = leg_for(request, ex, state, meter, route, translator, body, deadline)
    except GatewayError:
        return None
    return None if fan_out else leg


async def serve(
    request: web.Request,
    ex: Exchange,
    state: NodeState,
    meter: RequestMeter,
    route: Route,
    translator: ChatTranslator,
    body: bytes,
    deadline: float,
    fallback: Fallback | None = None,
) -> web.StreamResponse:
    """Serve one translated chat completion (GatewayError for what the gateway refuses itself)."""
    leg, fan_out = leg_for(request, ex, state, meter, route, translator, body, deadline)
    prepare_meter(meter, route, leg.stream, state.settings.usage.metering)
    if fan_out:
        return await _fan_out_routed(ex, state, meter, leg, fan_out)
    return await attempts.run(ex, meter, state.health, state.settings.routing, leg, deadline, fallback)


async def _fan_out_routed(
    ex: Exchange, state: NodeState, meter: RequestMeter, leg: TranslatedLeg, n: int
) -> web.StreamResponse:
    """``n`` calls at once to ONE deployment the plan picks, never retried (some calls may have
    answered already); the deployment's health learns how the fan-out ended."""
    plan = state.health.plan(leg.route)
    loop = asyncio.get_running_loop()
    try:
        dep = plan.next()
        if dep is None:
            raise attempts.no_deployment(state.health, plan.cooling_until())
        attempts.note(ex, meter, dep, 1)
        url, headers, call = leg.target(dep)
        started = loop.time()
        try:
            if call.stream:
                resp = await stream_choices(leg.relay, url, headers, call, leg.ids, leg.chat.include_usage, n)
            else:
                resp = await _fan_out(leg.relay, url, headers, call, leg.ids, n)
        except GatewayError as err:
            if err.code in attempts.NO_ANSWER:
                plan.failed(dep)
            raise
        if resp.status in RETRYABLE_STATUSES:
            plan.failed(dep, status=resp.status)
        else:
            plan.succeeded(dep, loop.time() - started)
        return resp
    finally:
        plan.finish()


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


__all__ = ["MAX_N", "choices_asked", "fallback_leg", "leg_for", "merge_answers", "parse_chat", "prepare_meter", "serve", "translator_for"]
