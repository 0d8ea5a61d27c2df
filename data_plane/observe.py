"""What every native-endpoint request leaves behind: metrics, one log line, the overhead header.

:func:`observed` wraps a native endpoint's handler (inside the middleware, so it
sees the GatewayError before it is rendered). The request's metering
(``data_plane.usage``) knows how long upstream took; everything else is the
gateway's own time:

- ``x-odock-overhead-ms`` on the response: time since the request arrived minus
  time spent waiting on upstream, taken when the response starts. For a
  buffered answer that is everything but the body write; for a stream it is
  what the gateway added before the first byte (upstream's wait for its
  headers excluded). Errors the gateway answers itself carry it too (no
  upstream: all of it is overhead).
- metrics and the log line, when the handler ends (streams: when they end):
  total time, overhead = total minus upstream, upstream time to headers, tokens.

The log line (logger ``odock.data_plane.request``, INFO) carries ids, the model
name, status, outcome, timings and token counts: never a key, a header or a
body. Turn it off with ``ODOCK_LOG_LEVEL=warning``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from data_plane.errors import GatewayError
from data_plane.metrics import OUTCOMES, DataPlaneMetrics, RequestDone, family_label
from data_plane.providers import Endpoint
from data_plane.state import STATE
from data_plane.usage import METER, RECORD_ID
from data_plane.usage.meter import CANCELLED, CLIENT_CLOSED, ERROR, RequestMeter

OVERHEAD_HEADER = "x-odock-overhead-ms"

log = logging.getLogger("odock.data_plane.request")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Observation:
    """One native-endpoint request being observed."""

    endpoint: Endpoint
    started: float  # time.perf_counter() at handler entry
    error_code: str = ""
    cancelled: bool = False  # the client went away

    def overhead(self, meter: RequestMeter | None, now: float) -> float:
        """Seconds of gateway time so far (elapsed minus upstream wait)."""
        waited = meter.upstream_wait(now) if meter is not None else 0.0
        return max(0.0, now - self.started - waited)


OBSERVATION: web.RequestKey[Observation] = web.RequestKey("odock_observation", Observation)


def observed(endpoint: Endpoint, handler: Handler, metrics: DataPlaneMetrics) -> Handler:
    """``handler`` with metrics and the request log line around it."""

    async def handle(request: web.Request) -> web.StreamResponse:
        obs = Observation(endpoint, time.perf_counter())
        request[OBSERVATION] = obs
        status = 500
        metrics.in_flight.inc()
        try:
            response = await handler(request)
            status = response.status
            return response
        except GatewayError as err:
            status, obs.error_code = err.status, err.code
            raise
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status, obs.cancelled = CLIENT_CLOSED, True
            raise
        except Exception:
            obs.error_code = "internal_error"
            raise
        finally:
            metrics.in_flight.dec()
            _finish(request, obs, status, metrics)

    return handle


def _finish(request: web.Request, obs: Observation, status: int, metrics: DataPlaneMetrics) -> None:
    now = time.perf_counter()
    meter = request.get(METER)
    total = now - obs.started
    overhead = obs.overhead(meter, now)
    outcome = CANCELLED if obs.cancelled else ERROR
    first_byte: float | None = None
    tokens = (0, 0, 0)
    if meter is not None:
        status, outcome = meter.status or status, meter.outcome
        first_byte = meter.upstream_first_byte()
        if meter.usage is not None:
            tokens = (meter.usage.input, meter.usage.output, meter.usage.cached)
    done = RequestDone(
        family=obs.endpoint.family,
        endpoint=obs.endpoint.name,
        status=status,
        outcome=outcome,
        total=total,
        overhead=overhead,
        upstream_first_byte=first_byte,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cached_tokens=tokens[2],
    )
    try:
        metrics.request_done(done)
    except Exception:  # a metrics bug must never fail a request
        log.exception("recording request metrics failed")
    if log.isEnabledFor(logging.INFO):
        _log_line(request, obs, done, meter)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _log_line(request: web.Request, obs: Observation, done: RequestDone, meter: RequestMeter | None) -> None:
    outcome = OUTCOMES.get(done.outcome, "unspecified")
    fields: dict[str, object] = {
        "request_id": request.get(RECORD_ID, ""),
        "node_id": request.app[STATE].settings.node_id,
        "org_id": meter.org_id if meter is not None else "",
        "key_id": meter.key_id if meter is not None else "",
        "model": meter.model_name if meter is not None else "",
        "family": family_label(done.family),
        "endpoint": done.endpoint,
        "method": request.method,
        "status": done.status,
        "outcome": outcome,
        "streamed": bool(meter is not None and meter.streamed),
        "latency_ms": _ms(done.total),
        "overhead_ms": _ms(done.overhead),
        "upstream_first_byte_ms": _ms(done.upstream_first_byte),
        "input_tokens": done.input_tokens,
        "output_tokens": done.output_tokens,
        "cached_input_tokens": done.cached_tokens,
    }
    if obs.error_code:
        fields["error_code"] = obs.error_code
    log.info("%s %s %d %s", request.method, done.endpoint, done.status, outcome, extra=fields)


async def stamp_overhead(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: ``x-odock-overhead-ms`` on every native-endpoint response."""
    obs = request.get(OBSERVATION)
    if obs is not None:
        overhead = obs.overhead(request.get(METER), time.perf_counter())
        response.headers[OVERHEAD_HEADER] = f"{overhead * 1000:.3f}"
