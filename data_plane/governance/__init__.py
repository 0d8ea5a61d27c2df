"""Governance state from the control plane: gRPC client, cache and watch stream."""
