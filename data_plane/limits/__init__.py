"""Org and key limits on the data plane: leases, admission, settlement, headers (docs/limits.md)."""

from data_plane.limits.admission import ADMISSION, Admission, stamp_limit_headers
from data_plane.limits.estimate import Estimate, estimate
from data_plane.limits.limiter import Limiter

__all__ = ["ADMISSION", "Admission", "Estimate", "Limiter", "estimate", "stamp_limit_headers"]
