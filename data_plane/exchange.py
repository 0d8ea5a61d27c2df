"""One request's state, carried under one request key from the middleware to the response headers.

The middleware (``app.py``) opens an :class:`Exchange` for every request with its ids; on a
native endpoint it also holds the endpoint and the start time, and the handler (``native.py``)
fills in what it learns: the key's grant, the route, the usage meter, the limits admission.
The middleware then works out the request's status once (``app.gateway_middleware``) and
closes the exchange; ``stamp_headers`` and the request log line read the same object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from data_plane.governance.domain import KeyGrant, Route
    from data_plane.limits.admission import Admission
    from data_plane.providers import Endpoint
    from data_plane.usage.meter import RequestMeter


class Exchange:
    """What the gateway knows about one request while it runs (plain attributes: set, then read)."""

    __slots__ = (
        "admission",
        "attempts",
        "client_request_id",
        "deployment",
        "endpoint",
        "grant",
        "meter",
        "record_id",
        "request_id",
        "route",
        "routed_model",
        "started",
    )

    def __init__(
        self,
        record_id: str,
        request_id: str,
        client_request_id: str,
        endpoint: Endpoint | None = None,
        started: float = 0.0,
    ) -> None:
        self.record_id = record_id  # the gateway's own id: the usage record's (docs/usage.md)
        self.request_id = request_id  # x-request-id: the client's well-formed one, else record_id
        self.client_request_id = client_request_id  # the client's well-formed x-request-id, else ""
        self.endpoint = endpoint  # None: not a native endpoint (health, listings, unknown paths)
        self.started = started  # time.perf_counter() when a native endpoint's request began
        self.grant: KeyGrant | None = None  # set once the key is authorized
        self.route: Route | None = None  # set once the model is resolved
        self.meter: RequestMeter | None = None  # set once the key is authorized: the request is metered
        self.admission: Admission | None = None  # set once the limits let the request through
        # Set by the attempt loop (attempts.py) for the x-odock-* headers and the log line.
        self.attempts = 0  # upstream attempts made
        self.deployment = ""  # the deployment that answered, or the last one tried
        self.routed_model = ""  # the fallback model that answered ("" the model asked for)

    def overhead(self, now: float) -> float:
        """Seconds of gateway time so far (elapsed minus upstream wait)."""
        meter = self.meter
        waited = meter.upstream_wait(now) if meter is not None else 0.0
        return max(0.0, now - self.started - waited)


EXCHANGE: web.RequestKey[Exchange] = web.RequestKey("odock_exchange", Exchange)
