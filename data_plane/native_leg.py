"""A native request's call to one deployment: the body, URL and headers made for it, the answer relayed.

The handler (``native.py``) decides what depends on the request alone (the body read and
inspected, streaming, the target endpoint); the attempt loop (``attempts.py``) asks this leg to
call each deployment it picks: the model rewritten to that deployment's upstream slug exactly
as for a model with one deployment, its base URL, its credential (headers, pool tag, scrubber),
its network and timeout.
"""

from __future__ import annotations

from aiohttp import web

from data_plane.errors import GatewayError
from data_plane.governance.domain import Deployment, Route
from data_plane.payload import PayloadError, multipart_with_model, with_model
from data_plane.payload.json_body import JsonFacts
from data_plane.payload.multipart import MultipartFacts
from data_plane.providers import Endpoint
from data_plane.providers.dialect import Dialect
from data_plane.providers.headers import build_headers
from data_plane.relay import Relay
from data_plane.scrub import secret_for
from data_plane.upstream.egress import EGRESS
from data_plane.upstream.response import UpstreamResponse
from data_plane.upstream.transport import Transport
from data_plane.upstream.url import split_url
from data_plane.usage.inject import ensure_include_usage
from data_plane.usage.meter import FLAG_TRANSLATED, RequestMeter
from data_plane.usage.shapes import Shape
from data_plane.usage.tokens import Usage


class NativeLeg:
    """One route of a native request (the model's, or a fallback's), called one deployment at a time."""

    __slots__ = (
        "body", "content_type", "dialect", "facts", "form_facts", "idle", "inject", "injected", "query",
        "relay", "request", "route", "shape", "streaming", "target", "transport", "units",
    )  # fmt: skip

    def __init__(
        self,
        request: web.Request,
        relay: Relay,
        transport: Transport,
        route: Route,
        target: Endpoint,
        dialect: Dialect,
        body: bytes | None,
        *,
        facts: JsonFacts | None,
        form_facts: MultipartFacts | None,
        content_type: str,
        streaming: bool,
        inject: bool,
        idle: float,
        shape: Shape,
        units: Usage | None = None,
    ) -> None:
        self.request = request
        self.relay = relay
        self.transport = transport
        self.route = route
        self.target = target
        self.dialect = dialect
        self.body = body
        self.facts = facts
        self.form_facts = form_facts
        self.content_type = content_type  # a form's, sent as it came ("" otherwise)
        self.streaming = streaming
        self.inject = inject  # ask the provider for stream usage (metering on, injectable endpoint)
        self.injected = False
        self.idle = idle
        self.shape = shape  # the record's usage shape (the endpoint's; NO_USAGE with metering off)
        self.query = request.rel_url.raw_query_string
        self.units = units  # usage the request implies (speech: characters), reported with a 2xx answer

    def _body(self, slug: str) -> bytes | None:
        body, facts, target = self.body, self.facts, self.target
        if body is None:
            return None
        if target.model_in == "body" and facts is not None:
            return with_model(body, facts, slug)
        if self.form_facts is not None:
            return multipart_with_model(body, self.form_facts, slug)
        if target.model_in == "path" and facts is not None and facts.model_span:
            # The path decided the route; a body "model" the provider might
            # prefer must not point anywhere else, so it gets the canonical slug.
            return with_model(body, facts, "models/" + slug.removeprefix("models/"))
        return body

    def enter(self, meter: RequestMeter) -> None:
        meter.family = self.route.family
        meter.flags &= ~FLAG_TRANSLATED
        meter.shape = self.shape
        meter.streamed = self.streaming

    async def open(self, dep: Deployment) -> UpstreamResponse:
        slug = dep.upstream_slug
        try:
            body = self._body(slug)
            url = self.target.upstream_url(dep.base_url, slug, self.query)
            # A host IDNA cannot encode (a legacy row) fails here as a 502; cached, so the client's call is a hit.
            split_url(url)
        except PayloadError as exc:
            raise GatewayError(400, exc.code, exc.message, param=exc.param) from None
        except ValueError:
            raise GatewayError(
                502, "upstream_misconfigured", "The model's upstream address is not usable"
            ) from None
        try:
            headers = build_headers(self.dialect, self.request.headers.items(), dep.secret)
        except (ValueError, UnicodeDecodeError):
            raise GatewayError(
                502, "credential_unavailable", "The model's provider credential cannot be used right now"
            ) from None
        if self.content_type:
            headers["Content-Type"] = self.content_type
        if self.inject and body is not None:
            body, self.injected = ensure_include_usage(body, self.facts)
        relay = self.relay
        relay.meter.streamed = self.streaming  # once the request is ready to go (a 400 above is not a stream)
        relay.secret = secret = secret_for(dep.secret)
        timeout = dep.timeout
        relay.idle = min(self.idle, timeout) if timeout > 0 else self.idle
        EGRESS.set(self.route.egress)  # checked on each new upstream connection (upstream/egress.py)
        return await relay.open(
            self.transport, self.target.method, url, headers, body,
            tenant=secret.pool_tag, first_byte_timeout=timeout, network=dep.network,
        )  # fmt: skip

    async def pass_on(self, upstream: UpstreamResponse) -> web.StreamResponse:
        if self.units is not None and 200 <= upstream.status < 300:
            # Not final: a token count the answer reports (speech's SSE done event) replaces it.
            self.relay.meter.report(self.units, final=False)
        return await self.relay.relay(upstream, streaming=self.streaming, strip_injected=self.injected)

    async def hold(self, upstream: UpstreamResponse) -> bytes | web.StreamResponse:
        body = await self.relay.read_failure(upstream)
        if len(body) > self.relay.max_buffered:
            return await self.relay.relay_rest(upstream, body)
        return body

    def answer(self, dep: Deployment, upstream: UpstreamResponse, body: bytes) -> web.StreamResponse:
        self.relay.secret = secret_for(dep.secret)  # a later attempt may have set another's
        return self.relay.buffered_answer(upstream, body)
