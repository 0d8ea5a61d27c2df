"""A database error never prints SQL statement parameters in the control plane's log.

SQLAlchemy exceptions render ``[parameters: (...)]`` in their str(), so a
"database is locked" traceback would carry the row being written (names,
digests). The engine hides them; this runs a real control plane against a
SQLite file whose write lock another connection holds.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import grpc
import pytest

from tests.support.planes import start_control_plane
from tests.support.provision import Provisioner

CANARY = "canary-param-7q3z9w"


async def test_locked_database_error_log_has_no_parameter_values(tmp_path: Path) -> None:
    path = tmp_path / "cp.db"
    cp = start_control_plane(f"sqlite:///{path}", extra_env={"ODOCK_LOG_LEVEL": "debug"})
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # holds the write lock until rollback
        async with Provisioner.connect(cp.address, cp.admin_token) as admin:
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                # The write waits out SQLite's busy timeout (10 s), then fails "database is locked".
                await admin.create_org(CANARY)
        assert failed.value.code() == grpc.StatusCode.INTERNAL
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        code = cp.stop()
    assert code == 0, cp.stderr_text()
    log = cp.stderr_text()
    assert "database is locked" in log  # the error was logged ...
    assert "parameters hidden" in log  # ... by SQLAlchemy with its parameters withheld
    assert CANARY not in log, "a statement parameter reached the log"
