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
from data_plane.logs import REQUEST_LOGGER, RequestFields, request_log
from data_plane.metrics import OUTCOMES, DataPlaneMetrics, family_label
from data_plane.providers import Endpoint
from data_plane.state import STATE
from data_plane.usage import METER, RECORD_ID, client_request_id
from data_plane.usage.meter import CANCELLED, CLIENT_CLOSED, ERROR, RequestMeter

OVERHEAD_HEADER = "x-odock-overhead-ms"

log = logging.getLogger(REQUEST_LOGGER)

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
        metrics.in_flight_now += 1
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
            metrics.in_flight_now -= 1
            _finish(request, obs, status, metrics)

    return handle


def _finish(request: web.Request, obs: Observation, status: int, metrics: DataPlaneMetrics) -> None:
    now = time.perf_counter()
    meter = request.get(METER)
    total = now - obs.started
    overhead = obs.overhead(meter, now)
    outcome = CANCELLED if obs.cancelled else ERROR
    first_byte: float | None = None
    usage = None
    if meter is not None:
        status, outcome = meter.status or status, meter.outcome
        first_byte = meter.upstream_first_byte()
        usage = meter.usage
    tokens = (usage.input, usage.output, usage.cached) if usage is not None else (0, 0, 0)
    endpoint = obs.endpoint
    try:
        metrics.request_done(
            endpoint.family, endpoint.name, status, outcome, total, overhead, first_byte, *tokens
        )
    except Exception:  # a metrics bug must never fail a request
        log.exception("recording request metrics failed")
    if not log.isEnabledFor(logging.INFO):
        return
    if meter is not None:  # the meter carries the record's ids (request_id is the record id)
        rid, node, org, key, model = (
            meter.request_id,
            meter.node_id,
            meter.org_id,
            meter.key_id,
            meter.model_name,
        )
    else:  # refused before authentication
        rid, node, org, key, model = (
            request.get(RECORD_ID, ""),
            request.app[STATE].settings.node_id,
            "",
            "",
            "",
        )
    fields = RequestFields(
        rid,
        node,
        org,
        key,
        model,
        family_label(endpoint.family),
        endpoint.name,
        request.method,
        status,
        OUTCOMES.get(outcome, "unspecified"),
        meter is not None and meter.streamed,
        round(total * 1000, 3),
        round(overhead * 1000, 3),
        None if first_byte is None else round(first_byte * 1000, 3),
        tokens[0],
        tokens[1],
        tokens[2],
        obs.error_code,
        client_request_id(request),
    )
    writer = request_log()
    if writer is not None:
        writer.write(fields)
    else:  # logging not configured by this plane (embedded, tests): the ordinary path
        log.info(fields.message(), extra=fields.extra())


def stamp_overhead(response: web.StreamResponse, obs: Observation, meter: RequestMeter | None) -> None:
    """``x-odock-overhead-ms`` on a native endpoint's response, as it is prepared."""
    overhead = obs.overhead(meter, time.perf_counter())
    response.headers[OVERHEAD_HEADER] = f"{overhead * 1000:.3f}"
