"""Governance state from the control plane: the link (gRPC), the cache and the watch stream."""
