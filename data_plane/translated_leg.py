"""A translated request's call to one deployment (the attempt loop's leg, ``attempts.py``).

The OpenAI-format request is translated for each deployment's upstream slug (Gemini names the
model in the path, Anthropic in the body), sent with that deployment's credential, network and
timeout, and its answer read with the family's translator (``translated_relay.py``).
"""

from __future__ import annotations

from aiohttp import web

from data_plane.errors import GatewayError
from data_plane.governance.domain import Deployment, Route
from data_plane.providers import ANTHROPIC, DIALECTS, GEMINI, endpoint_named
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
from data_plane.translated_relay import TranslatedRelay, upstream_url
from data_plane.upstream.egress import EGRESS
from data_plane.upstream.response import UpstreamResponse
from data_plane.usage.meter import FLAG_TRANSLATED, RequestMeter
from data_plane.usage.shapes import NO_USAGE

# Each backend's native generation endpoint: its usage shape reads the native answer.
_NATIVE_ENDPOINTS: dict[int, str] = {
    ANTHROPIC: "/v1/messages",
    GEMINI: "/v1beta/models/{model}:generateContent",
}
_STREAM_ENDPOINTS: dict[int, str] = {GEMINI: "/v1beta/models/{model}:streamGenerateContent"}


def prepare_meter(meter: RequestMeter, route: Route, streaming: bool, metering: bool) -> None:
    """The record of a translated request: the backend's usage shape (``native.py`` already named
    the backend's family and set ``FLAG_TRANSLATED`` once the route was known)."""
    meter.streamed = streaming
    name = _STREAM_ENDPOINTS.get(route.family) if streaming else None
    name = name or _NATIVE_ENDPOINTS.get(route.family)
    meter.shape = endpoint_named(name).usage if metering and name is not None else NO_USAGE


class TranslatedLeg:
    """One translated route (the model's, or a fallback's), called one deployment at a time."""

    __slots__ = ("calls", "chat", "ids", "metering", "relay", "request", "route", "stream", "translator")

    def __init__(
        self,
        request: web.Request,
        relay: TranslatedRelay,
        route: Route,
        translator: ChatTranslator,
        chat: ChatRequest,
        ids: ReplyIds,
        call: UpstreamCall,
        *,
        metering: bool,
    ) -> None:
        self.request = request
        self.relay = relay
        self.route = route
        self.translator = translator
        self.chat = chat
        self.ids = ids
        self.metering = metering
        self.stream = call.stream
        self.calls = {route.upstream_slug: call}  # by upstream slug: deployments usually share one

    def call(self, slug: str) -> UpstreamCall:
        """The native call for ``slug`` (a 400 when the request cannot be translated)."""
        found = self.calls.get(slug)
        if found is None:
            route = self.route
            model = TranslatedModel(name=route.model_name, slug=slug, max_output_tokens=route.max_output_tokens,
                                    capabilities=route.capabilities)  # fmt: skip
            try:
                found = self.translator.request(self.chat, model)
            except TranslationError as exc:
                raise GatewayError(400, exc.code, exc.message, param=exc.param) from None
            self.calls[slug] = found
        return found

    def target(self, dep: Deployment) -> tuple[str, dict[str, str], UpstreamCall]:
        """``dep``'s URL, headers and call; the relay set up for it (credential, timeout, network)."""
        call = self.call(dep.upstream_slug)
        try:
            url = upstream_url(dep.base_url, call.path)
        except ValueError:
            raise GatewayError(
                502, "upstream_misconfigured", "The model's upstream address is not usable"
            ) from None
        try:
            headers = build_headers(DIALECTS[self.route.family], self.request.headers.items(), dep.secret)
        except (ValueError, UnicodeDecodeError):
            raise GatewayError(
                502, "credential_unavailable", "The model's provider credential cannot be used right now"
            ) from None
        headers["Content-Type"] = "application/json"
        relay = self.relay
        relay.secret = secret_for(dep.secret)
        relay.first_byte = timeout = dep.timeout
        relay.idle = min(relay.upstream_idle, timeout) if timeout > 0 else relay.upstream_idle
        relay.network = dep.network
        EGRESS.set(self.route.egress)  # checked on each new upstream connection (upstream/egress.py)
        return url, headers, call

    def enter(self, meter: RequestMeter) -> None:
        meter.family = self.route.family
        meter.flags |= FLAG_TRANSLATED
        prepare_meter(meter, self.route, self.stream, self.metering)

    async def open(self, dep: Deployment) -> UpstreamResponse:
        url, headers, call = self.target(dep)
        return await self.relay.send(url, headers, call)

    async def pass_on(self, upstream: UpstreamResponse) -> web.StreamResponse:
        relay = self.relay
        if self.stream:
            return await relay.stream_opened(upstream, self.ids, self.chat.include_usage)
        return relay.respond(await relay.read_answer(upstream, self.ids), meter_usage=True)

    async def hold(self, upstream: UpstreamResponse) -> bytes | web.StreamResponse:
        return await self.relay.read_failure(upstream)

    def answer(self, dep: Deployment, upstream: UpstreamResponse, body: bytes) -> web.StreamResponse:
        self.relay.secret = secret_for(dep.secret)  # a later attempt may have set another's
        return self.relay.failure_response(upstream, body)
