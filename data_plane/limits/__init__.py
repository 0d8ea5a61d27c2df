"""Org and key limits on the data plane: leases, admission, settlement, headers (docs/limits.md).

The modules depend one way (none imports a later one, not even for type checking):
``rules``, ``pools`` -> ``lanes`` (per-limit state, per-key plans) -> ``admission`` (one request's
reservations) -> ``leases`` (``LeaseFetcher``: the AcquireLeases calls) -> ``degraded`` (outages,
local allowances) -> ``limiter`` (``Limiter`` owns a ``LeaseFetcher`` and a ``Degraded``; the
fetcher reports back through ``LeaseListener``, an ``Admission`` settles through ``Corrector``)
-> ``gate`` (what the handler calls). ``estimate`` stands alone.
"""

from data_plane.limits.admission import Admission
from data_plane.limits.estimate import Estimate, estimate
from data_plane.limits.limiter import Limiter

__all__ = ["Admission", "Estimate", "Limiter", "estimate"]
