"""Limits across data-plane nodes: windows, DB-backed counters, and the lease service."""

from control_plane.limits.service import LeaseService

__all__ = ["LeaseService"]
