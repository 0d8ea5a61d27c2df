"""Fixtures for the control plane's operability tests (metrics, logs, migrate, health, shutdown)."""

from __future__ import annotations

from tests.support.postgres import db_url, migrated_db_url, pg_server  # noqa: F401
