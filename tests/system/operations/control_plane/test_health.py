"""gRPC health follows the database: NOT_SERVING while PostgreSQL is down, SERVING when it returns.

Runs against a private PostgreSQL server (the shared session one must stay up),
stopped and restarted in place on the same port and data directory.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any, cast

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from control_plane.dbcheck import LIVENESS_SERVICE
from odock.v1 import node_pb2, node_pb2_grpc, orgs_pb2, orgs_pb2_grpc
from tests.support import spawn
from tests.support.postgres import PostgresServer, start_postgres
from tests.system.operations.control_plane.ops import WAIT_S, bearer, scrape, start_with_metrics, wait_for

pytestmark = pytest.mark.postgres

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


def _stop(server: PostgresServer) -> None:
    server.process.send_signal(signal.SIGINT)  # fast shutdown: existing connections are cut
    server.process.wait(timeout=30)


def _restart(server: PostgresServer) -> None:
    """Start the same cluster again with the same command line (same port, same data)."""
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": str(server.root)}
    with open(server.root / "postgres.log", "ab") as log:
        server.process = spawn.popen(
            cast(list[str], server.process.args), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=server.root,
        )  # fmt: skip
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            with psycopg.connect(server.admin_conninfo, autocommit=True):
                return
        except psycopg.OperationalError:
            assert server.process.poll() is None, server.log_tail()
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.05)


def _wait_status(health: Any, service: str, want: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while True:
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        if status == want:
            return
        assert time.monotonic() < deadline, f"{service!r} stayed {status}"
        time.sleep(0.05)


def test_health_flips_with_the_database_and_liveness_does_not(private_pg: PostgresServer) -> None:
    url = private_pg.create_database()
    cp, metrics = start_with_metrics(url, {"ODOCK_DB_CHECK_SECONDS": "0.2"})
    try:
        with grpc.insecure_channel(cp.address) as ch:
            health: Any = health_pb2_grpc.HealthStub(ch)
            orgs: Any = orgs_pb2_grpc.OrgServiceStub(ch)
            for service in ("", LIVENESS_SERVICE, "odock.v1.NodeService"):
                assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == SERVING
            watch = node_pb2_grpc.NodeServiceStub(ch).Watch(
                node_pb2.WatchRequest(node_id="n"), metadata=bearer(cp.node_token)
            )
            assert next(watch).HasField("heartbeat")

            _stop(private_pg)
            _wait_status(health, "", NOT_SERVING)
            assert (
                health.Check(health_pb2.HealthCheckRequest(service="odock.v1.OrgService")).status
                == NOT_SERVING
            )
            assert health.Check(health_pb2.HealthCheckRequest(service=LIVENESS_SERVICE)).status == SERVING
            # Watch streams outlive the outage: data planes keep their cache current.
            assert next(watch).HasField("heartbeat")
            down = scrape(metrics)
            assert down.value("odock_cp_serving") == 0 and down.value("odock_cp_database_up") == 0
            assert down.value("odock_cp_database_checks_total", result="failed") >= 2
            assert down.value("odock_cp_database_errors_total", kind="OperationalError") >= 1

            _restart(private_pg)
            _wait_status(health, "", SERVING)
            assert (
                health.Check(health_pb2.HealthCheckRequest(service="odock.v1.OrgService")).status == SERVING
            )
            org = orgs.CreateOrg(orgs_pb2.CreateOrgRequest(org=orgs_pb2.Org(name="back")),
                                 metadata=bearer(cp.admin_token))  # fmt: skip
            assert org.id.startswith("org_")
            wait_for(metrics, lambda s: s.value("odock_cp_serving") == 1 and s.value("odock_cp_database_up") == 1,
                     "serving again")  # fmt: skip
            watch.cancel()
    finally:
        code = cp.stop()
    assert code == 0, cp.stderr_text()
    log = cp.stderr_text()
    assert "health NOT_SERVING" in log and "health SERVING" in log
