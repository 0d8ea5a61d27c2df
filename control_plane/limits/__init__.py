"""Limits across data-plane nodes: windows and the lease service.

The counters and leases themselves are kept by ``control_plane/store/repositories/ledger.py``.
"""

from control_plane.limits.service import LeaseService

__all__ = ["LeaseService"]
