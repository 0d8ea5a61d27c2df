"""/metrics of a real control-plane process after a scripted set of admin and node RPCs."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from odock.v1 import node_pb2, node_pb2_grpc, orgs_pb2, orgs_pb2_grpc
from tests.control_plane.usage.env import batch, record
from tests.system.operations.control_plane.ops import (
    WAIT_S,
    Scrape,
    bearer,
    scrape,
    start_with_metrics,
    wait_for,
)

H = "odock_cp_grpc_server_handled_total"
SECONDS = "odock_cp_grpc_server_handling_seconds"
IN_FLIGHT = "odock_cp_grpc_server_in_flight"
ORGS = "odock.v1.OrgService"
NODE = "odock.v1.NodeService"


def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()
    code: grpc.StatusCode = err.value.code()
    return code


def test_scripted_rpcs_show_up_as_counters_histograms_and_gauges(tmp_path: Path) -> None:
    cp, metrics = start_with_metrics(f"sqlite:///{tmp_path / 'cp.db'}")
    try:
        before = scrape(metrics)
        assert before.value("odock_cp_node_streams", kind="watch") == 0
        assert before.value("odock_cp_usage_records_total", result="accepted") == 0
        assert before.value("process_resident_memory_bytes") > 0
        with grpc.insecure_channel(cp.address) as ch:
            admin, node = bearer(cp.admin_token), bearer(cp.node_token)
            orgs: Any = orgs_pb2_grpc.OrgServiceStub(ch)
            nodes: Any = node_pb2_grpc.NodeServiceStub(ch)
            org = orgs.CreateOrg(orgs_pb2.CreateOrgRequest(org=orgs_pb2.Org(name="acme")), metadata=admin)
            assert orgs.GetOrg(orgs_pb2.GetOrgRequest(name="acme"), metadata=admin).id == org.id
            gone = orgs.CreateOrg(orgs_pb2.CreateOrgRequest(org=orgs_pb2.Org(name="gone")), metadata=admin)
            orgs.DeleteOrg(orgs_pb2.DeleteOrgRequest(id=gone.id), metadata=admin)  # a change-log entry
            missing = orgs_pb2.GetOrgRequest(name="nope")
            assert _code(lambda: orgs.GetOrg(missing, metadata=admin)) == grpc.StatusCode.NOT_FOUND
            wrong = bearer("x" * 40)
            tiers = orgs_pb2.ListTiersRequest()
            assert _code(lambda: orgs.ListTiers(tiers, metadata=wrong)) == grpc.StatusCode.UNAUTHENTICATED
            listing = orgs_pb2.ListOrgsRequest()
            assert _code(lambda: orgs.ListOrgs(listing, metadata=node)) == grpc.StatusCode.PERMISSION_DENIED
            unknown = nodes.ResolveKey(node_pb2.ResolveKeyRequest(key_digest=os.urandom(32)), metadata=node)
            assert unknown.rejection == node_pb2.KEY_REJECTION_UNKNOWN
            short = node_pb2.ResolveKeyRequest(key_digest=b"abc")
            assert _code(lambda: nodes.ResolveKey(short, metadata=node)) == grpc.StatusCode.INVALID_ARGUMENT
            nope: Any = ch.unary_unary("/odock.v1.Nope/Nothing")
            assert _code(lambda: nope(b"", metadata=admin)) == grpc.StatusCode.UNIMPLEMENTED
            health: Any = health_pb2_grpc.HealthStub(ch)
            assert (
                health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
            )

            # A watch stream is a connected data plane and a feed subscriber while open.
            watch = nodes.Watch(node_pb2.WatchRequest(after_revision=0, node_id="node-1"), metadata=node)
            assert next(watch).HasField("heartbeat")
            open_ = wait_for(metrics, lambda s: s.value("odock_cp_node_streams", kind="watch") == 1, "watch")
            assert open_.value("odock_cp_watch_subscribers") == 1
            assert open_.rpc(IN_FLIGHT, f"{NODE}/Watch") == 1
            watch.cancel()
            wait_for(metrics, lambda s: s.rpc(H, f"{NODE}/Watch", grpc_code="CANCELLED") == 1, "watch end")

            # Usage: two batches on one stream; the stream counts while it is open.
            r1, r2 = record(), record()
            first = batch([r1, r2, r1, record(org_id="")], sequence=1, node_id="node-1")
            second = batch([r2], sequence=2, node_id="node-1")
            gate = threading.Event()

            def batches() -> Any:
                yield first
                gate.wait(WAIT_S)
                yield second

            acks = nodes.ReportUsage(batches(), metadata=node)
            ack = next(acks)
            assert (ack.accepted, ack.duplicates, ack.rejected) == (2, 1, 1)
            wait_for(metrics, lambda s: s.value("odock_cp_node_streams", kind="usage") == 1, "usage stream")
            gate.set()
            assert [(a.accepted, a.duplicates, a.rejected) for a in acks] == [(0, 1, 0)]

        final = wait_for(
            metrics,
            lambda s: (
                s.value("odock_cp_node_streams", kind="usage") == 0
                and s.value("odock_cp_changefeed_revision") >= 1
                and s.value("odock_cp_changefeed_lag_revisions") == 0
                and s.value("odock_cp_database_checks_total", result="ok") >= 1
            ),
            "usage stream end and a database check",
        )
        _check_final(final, org.id, r1.request_id)
    finally:
        code = cp.stop()
    assert code == 0, cp.stderr_text()


def _check_final(s: Scrape, org_id: str, request_id: str) -> None:
    expected = {
        (f"{ORGS}/CreateOrg", "OK"): 2,
        (f"{ORGS}/DeleteOrg", "OK"): 1,
        (f"{ORGS}/GetOrg", "OK"): 1,
        (f"{ORGS}/GetOrg", "NOT_FOUND"): 1,
        (f"{ORGS}/ListTiers", "UNAUTHENTICATED"): 1,
        (f"{ORGS}/ListOrgs", "PERMISSION_DENIED"): 1,
        (f"{NODE}/ResolveKey", "OK"): 1,
        (f"{NODE}/ResolveKey", "INVALID_ARGUMENT"): 1,
        (f"{NODE}/Watch", "CANCELLED"): 1,
        (f"{NODE}/ReportUsage", "OK"): 1,
        ("grpc.health.v1.Health/Check", "OK"): 1,
        ("unknown/unknown", "UNIMPLEMENTED"): 1,
    }
    for (method, code), count in expected.items():
        assert s.rpc(H, method, grpc_code=code) == count, (method, code)
    handled = {k: v for k, v in s.samples.items() if k[0] == H}
    assert sum(handled.values()) == sum(expected.values()), sorted(handled)
    # Histograms: one observation per call, every one in the +Inf bucket.
    for method, calls in ((f"{ORGS}/GetOrg", 2), (f"{ORGS}/CreateOrg", 2), (f"{NODE}/ResolveKey", 2)):
        assert s.rpc(f"{SECONDS}_count", method) == calls, method
        assert s.rpc(f"{SECONDS}_bucket", method, le="+Inf") == calls, method
        assert 0 < s.rpc(f"{SECONDS}_sum", method) < 30, method
    assert all(v == 0 for (name, _), v in s.samples.items() if name == IN_FLIGHT)
    assert s.value("odock_cp_node_streams", kind="watch") == 0
    assert s.value("odock_cp_watch_subscribers") == 0
    assert s.value("odock_cp_usage_batches_total", result="stored") == 2
    assert s.value("odock_cp_usage_batches_total", result="failed") == 0
    for result, count in (("accepted", 2), ("duplicate", 2), ("rejected", 1)):
        assert s.value("odock_cp_usage_records_total", result=result) == count, result
    assert 0 <= s.value("odock_cp_changefeed_last_read_age_seconds") < 30
    assert s.value("odock_cp_database_up") == 1 and s.value("odock_cp_serving") == 1
    assert not [k for k in s.samples if k[0] == "odock_cp_database_errors_total"]
    # Bounded labels: no node, org or request ids.
    for needle in ("node-1", org_id, request_id):
        assert needle not in s.text
