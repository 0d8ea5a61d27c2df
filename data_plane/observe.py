"""What every native-endpoint request leaves behind: its usage record, metrics, one log line, the
overhead header.

The middleware (``app.py``) works out how a native-endpoint request ended and calls :func:`finish`
once; the request's metering (``data_plane.usage``) knows how long upstream took; everything else
is the gateway's own time:

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

import logging
import time
from collections.abc import MutableMapping

from aiohttp import web

from data_plane.exchange import Exchange
from data_plane.limits.gate import settle_request
from data_plane.logs import REQUEST_LOGGER, RequestFields, request_log
from data_plane.metrics import OUTCOMES, DataPlaneMetrics, family_label
from data_plane.state import STATE
from data_plane.usage.meter import CANCELLED, CLIENT_CLOSED, ERROR

OVERHEAD_HEADER = "x-odock-overhead-ms"
ATTEMPTS_HEADER = "x-odock-attempts"
DEPLOYMENT_HEADER = "x-odock-deployment"
MODEL_HEADER = "x-odock-model"  # only when a fallback model answered

log = logging.getLogger(REQUEST_LOGGER)


def finish(
    request: web.Request, ex: Exchange, metrics: DataPlaneMetrics, status: int, error_code: str, ended: int
) -> None:
    """Close a native-endpoint request: its usage record, its limits settlement, metrics and log line.

    ``ended`` is how the handler ended: ``ERROR`` a GatewayError (``status``/``error_code`` are
    its), ``CANCELLED`` the client went away, 0 anything else (the meter keeps what the relay
    settled, or counts an internal error).
    """
    metrics.in_flight_now -= 1
    meter = ex.meter
    if meter is not None:
        if ended == ERROR:
            meter.settle(status, ERROR, error_code)
        elif ended == CANCELLED:
            meter.settle(meter.status or CLIENT_CLOSED, CANCELLED)
        meter.close()
        admission = ex.admission
        if admission is not None:
            settle_request(admission, meter)
    _observe(request, ex, status, error_code, ended == CANCELLED, metrics)


def _observe(
    request: web.Request,
    ex: Exchange,
    status: int,
    error_code: str,
    cancelled: bool,
    metrics: DataPlaneMetrics,
) -> None:
    now = time.perf_counter()
    meter = ex.meter
    total = now - ex.started
    overhead = ex.overhead(now)
    outcome: int = CANCELLED if cancelled else ERROR
    first_byte: float | None = None
    usage = None
    if meter is not None:
        status, outcome = meter.status or status, meter.outcome
        first_byte = meter.upstream_first_byte()
        usage = meter.usage
    tokens = (usage.input, usage.output, usage.cached) if usage is not None else (0, 0, 0)
    endpoint = ex.endpoint
    assert endpoint is not None  # only native endpoints are observed
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
            ex.record_id,
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
        ex.deployment,
        ex.attempts,
        error_code,
        ex.client_request_id,
    )
    writer = request_log()
    if writer is not None:
        writer.write(fields)
    else:  # logging not configured by this plane (embedded, tests): the ordinary path
        log.info(fields.message(), extra=fields.extra())


def stamp_overhead(response: web.StreamResponse, ex: Exchange) -> None:
    """``x-odock-overhead-ms`` on a native endpoint's response, as it is prepared."""
    overhead = ex.overhead(time.perf_counter())
    response.headers[OVERHEAD_HEADER] = f"{overhead * 1000:.3f}"


def stamp_routing(headers: MutableMapping[str, str], ex: Exchange) -> None:
    """The attempt loop's headers: how many upstream attempts, which deployment (and fallback model)."""
    headers[ATTEMPTS_HEADER] = str(ex.attempts)
    if ex.deployment:
        headers[DEPLOYMENT_HEADER] = ex.deployment
    if ex.routed_model:
        headers[MODEL_HEADER] = ex.routed_model
