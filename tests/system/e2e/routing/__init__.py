"""End-to-end tests of routing over several deployments (issue 14)."""
