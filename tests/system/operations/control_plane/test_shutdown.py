"""SIGTERM: in-flight unary calls finish, Watch streams end at once, the process exits 0 within the grace."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from odock.v1 import node_pb2, node_pb2_grpc, orgs_pb2, orgs_pb2_grpc
from tests.system.operations.control_plane.ops import bearer, start_with_metrics, wait_for

GRACE_S = 8.0


def test_sigterm_drains_unary_calls_ends_watches_and_exits_0(tmp_path: Path) -> None:
    db = tmp_path / "cp.db"
    cp, metrics = start_with_metrics(f"sqlite:///{db}", {"ODOCK_GRACE_SECONDS": str(GRACE_S)})
    # Another writer holds SQLite's write lock, so CreateOrg blocks (busy_timeout) until it lets go.
    lock = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        with grpc.insecure_channel(cp.address) as ch:
            nodes: Any = node_pb2_grpc.NodeServiceStub(ch)
            watches = [nodes.Watch(node_pb2.WatchRequest(node_id=f"n{i}"), metadata=bearer(cp.node_token))
                       for i in range(3)]  # fmt: skip
            for watch in watches:
                assert next(watch).HasField("heartbeat")
            lock.execute("BEGIN IMMEDIATE")
            orgs: Any = orgs_pb2_grpc.OrgServiceStub(ch)
            pending = orgs.CreateOrg.future(
                orgs_pb2.CreateOrgRequest(org=orgs_pb2.Org(name="late")), metadata=bearer(cp.admin_token)
            )
            wait_for(metrics, lambda s: s.rpc("odock_cp_grpc_server_in_flight", "odock.v1.OrgService/CreateOrg") == 1,
                     "CreateOrg in flight")  # fmt: skip
            started = time.monotonic()
            cp.process.send_signal(signal.SIGTERM)
            for watch in watches:  # every watch ends now, telling the node to go elsewhere
                with pytest.raises(grpc.RpcError) as err:
                    for _ in watch:
                        pass
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "reconnect to another replica" in (err.value.details() or "")
            assert time.monotonic() - started < GRACE_S / 2
            assert not pending.done(), "the unary call should still be waiting for the lock"
            assert cp.process.poll() is None, "exited before its in-flight call finished"
            lock.execute("ROLLBACK")
            org = pending.result(timeout=GRACE_S)
            assert org.name == "late"
        code = cp.process.wait(timeout=GRACE_S)
        elapsed = time.monotonic() - started
    finally:
        lock.close()
        cp.stop()
    assert code == 0, cp.stderr_text()
    assert elapsed < GRACE_S, "drained in-flight work but waited out the grace period anyway"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM orgs WHERE name = 'late'").fetchone() == (1,)
