"""The image's helper programs run for real: odock-migrate on a SQLite file, odock-healthcheck
against real planes, and make-secrets."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from control_plane.store.db import MIGRATIONS_DIR
from control_plane.store.tables import Base
from tests.support.dataplane import DataPlaneProcess, start_data_plane
from tests.support.planes import ControlPlaneProcess, start_control_plane
from tests.system.deploy.scripts import run_script


def alembic_head() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head
    return head


def test_odock_migrate_brings_a_fresh_database_to_head_and_is_idempotent(tmp_path: Path) -> None:
    db = tmp_path / "odock.db"
    env = {"ODOCK_DATABASE_URL": f"sqlite:///{db}"}
    for _ in range(2):
        result = run_script("odock-migrate", env=env)
        assert result.returncode == 0, result.stderr
        assert "schema is at head" in result.stdout
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(alembic_head(),)]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert set(Base.metadata.tables) <= tables


def test_odock_migrate_failure_is_one_line_without_the_password() -> None:
    password = "s3cret-Pw-canary"
    result = run_script(
        "odock-migrate", env={"ODOCK_DATABASE_URL": f"postgresql://odock:{password}@127.0.0.1:1/odock"}
    )
    assert result.returncode == 1
    assert result.stderr.startswith("odock-migrate: ") and result.stderr.count("\n") == 1
    assert password not in result.stderr + result.stdout


@pytest.fixture(scope="module")
def planes(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ControlPlaneProcess, DataPlaneProcess]]:
    cp = start_control_plane(f"sqlite:///{tmp_path_factory.mktemp('cp') / 'cp.db'}")
    try:
        dp = start_data_plane(cp.address, cp.node_token, cp.pepper)
        try:
            dp.wait_connected()
            yield cp, dp
        finally:
            assert dp.stop() == 0
    finally:
        assert cp.stop() == 0


def test_healthcheck_grpc_reports_a_serving_control_plane(
    planes: tuple[ControlPlaneProcess, DataPlaneProcess],
) -> None:
    cp, _ = planes
    ok = run_script("odock-healthcheck", "grpc", cp.address)
    assert ok.returncode == 0, ok.stderr
    unknown = run_script("odock-healthcheck", "grpc", cp.address, "--service", "no.such.Service")
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr


def test_healthcheck_http_reports_data_plane_liveness_and_readiness(
    planes: tuple[ControlPlaneProcess, DataPlaneProcess],
) -> None:
    _, dp = planes
    for path in ("/healthz", "/readyz"):
        result = run_script("odock-healthcheck", "http", dp.url + path)
        assert result.returncode == 0, result.stderr
    missing = run_script("odock-healthcheck", "http", dp.url + "/no-such-path")
    assert missing.returncode == 1 and "status 404" in missing.stderr


def test_healthcheck_fails_when_nothing_listens(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago and has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    grpc_result = run_script("odock-healthcheck", "grpc", f"127.0.0.1:{port}")
    http_result = run_script("odock-healthcheck", "http", f"http://127.0.0.1:{port}/healthz")
    assert grpc_result.returncode == 1 and "UNAVAILABLE" in grpc_result.stderr
    assert http_result.returncode == 1 and http_result.stderr.startswith("unhealthy: http")


def test_make_secrets_never_overwrites_and_never_prints_a_value(tmp_path: Path) -> None:
    out = tmp_path / "s"
    first = run_script("make-secrets", "--dir", str(out))
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_text() for p in out.iterdir()}
    for value in before.values():
        # The whole value, and what follows "ID=" / "VAR=" (a KEK, the database URL).
        for secret in (value.strip(), value.strip().partition("=")[2]):
            assert not secret or secret not in first.stdout + first.stderr
    again = run_script("make-secrets", "--dir", str(out))
    assert again.returncode == 1 and "nothing written" in again.stderr
    assert {p.name: p.read_text() for p in out.iterdir()} == before
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in out.iterdir())
