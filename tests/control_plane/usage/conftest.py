"""Usage (control-plane half) tests on SQLite and PostgreSQL: ``engine``, ``sessions`` and the database
fixtures come from tests/control_plane/conftest.py, ``env`` from ``env.py`` (tests/odockctl uses it too)."""

from __future__ import annotations

from tests.control_plane.usage.env import env  # noqa: F401
