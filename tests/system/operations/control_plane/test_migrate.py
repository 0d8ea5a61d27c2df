"""``control-plane migrate``: needs only the database URL, migrates, is idempotent, fails in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool

from control_plane.store.db import MIGRATIONS_DIR, sync_url
from control_plane.store.tables import Base
from tests.support.planes import REPO_ROOT


def run_cli(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m control_plane ARGS`` with only ``env`` (plus PATH/PYTHONPATH): no secrets at all."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ODOCK_")}
    base["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.run(
        [sys.executable, "-m", "control_plane", *args], env={**base, **env}, capture_output=True, text=True,
        timeout=90, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


def _head() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head
    return head


def _schema(url: str) -> tuple[str, set[str]]:
    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
            return str(version), set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_migrate_brings_a_fresh_database_to_head_twice(db_url: str) -> None:
    for _ in range(2):  # idempotent
        result = run_cli("migrate", env={"ODOCK_DATABASE_URL": db_url})
        assert result.returncode == 0, result.stderr
        assert result.stdout == "control-plane: database schema is at head\n"
    version, tables = _schema(db_url)
    assert version == _head()
    assert set(Base.metadata.tables) <= tables


def test_migrate_reads_the_url_from_a_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'odock.db'}"
    (tmp_path / "url").write_text(url + "\n")
    result = run_cli("migrate", env={"ODOCK_DATABASE_URL_FILE": str(tmp_path / "url")})
    assert result.returncode == 0, result.stderr
    assert _schema(url)[0] == _head()


def test_migrate_failure_is_one_line_without_the_password() -> None:
    password = "pw-canary-unreachable"
    result = run_cli(
        "migrate", env={"ODOCK_DATABASE_URL": f"postgresql://odock:{password}@127.0.0.1:1/odock"}
    )
    assert result.returncode == 1
    assert result.stderr.startswith("control-plane: OperationalError: ") and result.stderr.count("\n") == 1
    assert password not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (("migrate",), {"ODOCK_DATABASE_URL": "sqlite:///x.db", "ODOCK_DATABASE_URL_FILE": "/etc/hostname"},
         "control-plane: ODOCK_DATABASE_URL: set either"),
        (("migrate",), {"ODOCK_DATABASE_URL_FILE": "/nonexistent/url"},
         "control-plane: ODOCK_DATABASE_URL_FILE: no such file"),
        (("migrate",), {"ODOCK_DATABASE_URL": "mysql://x/y"}, "control-plane: ODOCK_DATABASE_URL: must be"),
        (("migrate",), {"ODOCK_LOG_FORMAT": "xml"}, "control-plane: ODOCK_LOG_FORMAT: must be"),
        (("upgrade",), {}, "invalid choice: 'upgrade'"),
    ],
)  # fmt: skip
def test_bad_settings_or_usage_exit_2(args: tuple[str, ...], env: dict[str, str], needle: str) -> None:
    result = run_cli(*args, env=env)
    assert result.returncode == 2
    assert needle in result.stderr


def _revisions() -> list[str]:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return [r.revision for r in reversed(list(ScriptDirectory.from_config(cfg).walk_revisions()))]


def test_migrate_to_an_older_revision_downgrades_and_back(db_url: str) -> None:
    """The rollback path docs/production.md describes: ``migrate --to REV`` then ``migrate``."""
    env = {"ODOCK_DATABASE_URL": db_url}
    assert run_cli("migrate", env=env).returncode == 0
    first = _revisions()[0]
    down = run_cli("migrate", "--to", first, env=env)
    assert down.returncode == 0, down.stderr
    assert down.stdout == f"control-plane: database schema is at {first}\n"
    version, tables = _schema(db_url)
    assert version == first and "usage_records" not in tables  # 0002 and later were undone
    up = run_cli("migrate", env=env)
    assert up.returncode == 0, up.stderr
    assert _schema(db_url)[0] == _head() and set(Base.metadata.tables) <= _schema(db_url)[1]


def test_migrate_to_an_unknown_revision_is_one_line(tmp_path: Path) -> None:
    result = run_cli("migrate", "--to", "9999", env={"ODOCK_DATABASE_URL": f"sqlite:///{tmp_path / 'o.db'}"})
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "unknown schema revision '9999'" in result.stderr
