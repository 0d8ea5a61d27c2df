"""The two calls the gateway makes: admit a request before it goes upstream, settle it after.

No aiohttp here: the handler keeps the admission on the request's exchange, and the app stamps
its headers (``Admission.write_headers``) when the response is prepared.
"""

from __future__ import annotations

from data_plane.governance.domain import KeyGrant, Pricing
from data_plane.limits.admission import Admission
from data_plane.limits.estimate import estimate
from data_plane.limits.limiter import Limiter
from data_plane.payload import JsonFacts
from data_plane.providers import Endpoint
from data_plane.settings import LimitSettings
from data_plane.usage.meter import RequestMeter


async def admit_request(
    limiter: Limiter,
    settings: LimitSettings,
    grant: KeyGrant,
    endpoint: Endpoint,
    body: bytes | None,
    facts: JsonFacts | None,
    pricing: Pricing,
) -> Admission:
    """Reserve the request's estimated usage against every limit that applies, or raise a GatewayError."""
    est = estimate(
        endpoint,
        len(body or b""),
        facts,
        pricing,
        bytes_per_token=settings.bytes_per_token,
        default_output_tokens=settings.default_output_tokens,
    )
    return await limiter.admit(grant, est)


def settle_request(admission: Admission, meter: RequestMeter) -> None:
    """Correct the reservation to what the meter saw (nothing seen: nothing spent but the request)."""
    usage = meter.usage
    if usage is None:
        admission.settle(0, 0)
    else:
        admission.settle(usage.input + usage.output, meter.cost_picos())
