"""The control plane as a real process: migrations, health, reflection, TLS, signals, startup errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from control_plane.server import SERVICE_NAMES
from odock.v1 import node_pb2, node_pb2_grpc, orgs_pb2, orgs_pb2_grpc
from tests.support.planes import ControlPlaneProcess, control_plane, control_plane_env, start_control_plane  # noqa: F401
from tests.support.secrets import PlaneSecrets
from tests.support.tls_certs import make_pki


def _md(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def test_fresh_database_is_migrated_and_served_then_sigterm_exits_0(db_url: str) -> None:
    cp = start_control_plane(db_url)
    try:
        with grpc.insecure_channel(cp.address) as ch:
            stub = orgs_pb2_grpc.OrgServiceStub(ch)
            org = stub.CreateOrg(
                orgs_pb2.CreateOrgRequest(org=orgs_pb2.Org(name="acme")), metadata=_md(cp.admin_token)
            )
            assert stub.GetOrg(orgs_pb2.GetOrgRequest(name="acme"), metadata=_md(cp.admin_token)).id == org.id
    finally:
        code = cp.stop()
    assert code == 0, cp.stderr_text()
    # the data survives a restart (and the second start migrates nothing new)
    again = start_control_plane(db_url, secrets=cp.secrets)
    try:
        with grpc.insecure_channel(again.address) as ch:
            got = orgs_pb2_grpc.OrgServiceStub(ch).GetOrg(orgs_pb2.GetOrgRequest(name="acme"),
                                                          metadata=_md(cp.admin_token))  # fmt: skip
            assert got.id == org.id
    finally:
        assert again.stop(signal.SIGINT) == 0


def test_ready_file_health_and_reflection(control_plane: ControlPlaneProcess) -> None:  # noqa: F811
    ready = json.loads(Path(control_plane.env["ODOCK_READY_FILE"]).read_text())
    assert ready == {"grpc": control_plane.address, "pid": control_plane.pid}
    with grpc.insecure_channel(control_plane.address) as ch:
        health: Any = health_pb2_grpc.HealthStub(ch)
        for service in ("", *SERVICE_NAMES):
            resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as err:
            health.Check(health_pb2.HealthCheckRequest(service="nope.Service"), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        refl: Any = reflection_pb2_grpc.ServerReflectionStub(ch)
        answers = list(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                 timeout=5))  # fmt: skip
        listed = {s.name for s in answers[0].list_services_response.service}
        assert set(SERVICE_NAMES) | {"grpc.health.v1.Health"} <= listed
        files = list(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="odock.v1.VirtualKeyService")]), timeout=5))  # fmt: skip
        assert files[0].file_descriptor_response.file_descriptor_proto


def test_sigterm_with_an_open_watch_stream_exits_0_within_grace(control_plane: ControlPlaneProcess) -> None:  # noqa: F811
    with grpc.insecure_channel(control_plane.address) as ch:
        stream = node_pb2_grpc.NodeServiceStub(ch).Watch(
            node_pb2.WatchRequest(after_revision=0, node_id="t"), metadata=_md(control_plane.node_token)
        )
        first = next(stream)  # a heartbeat: the stream is open
        assert first.HasField("heartbeat")
        started = time.monotonic()
        assert control_plane.stop() == 0
        assert time.monotonic() - started < 10
        with pytest.raises(grpc.RpcError):
            for _ in stream:
                pass


def test_tls_and_mutual_tls(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    db = f"sqlite:///{tmp_path / 'cp.db'}"
    server_tls = {"ODOCK_TLS_CERT_FILE": str(pki.server_cert), "ODOCK_TLS_KEY_FILE": str(pki.server_key)}
    cp = start_control_plane(db, extra_env=server_tls)
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
        with grpc.secure_channel(cp.address, creds) as ch:
            tiers = orgs_pb2_grpc.OrgServiceStub(ch).ListTiers(
                orgs_pb2.ListTiersRequest(), metadata=_md(cp.admin_token)
            )
            assert len(tiers.tiers) == 4
        with grpc.insecure_channel(cp.address) as plain:
            with pytest.raises(grpc.RpcError) as err:
                orgs_pb2_grpc.OrgServiceStub(plain).ListTiers(orgs_pb2.ListTiersRequest(), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        assert cp.stop() == 0
    mtls = start_control_plane(db, extra_env={**server_tls, "ODOCK_TLS_CLIENT_CA_FILE": str(pki.ca)})
    try:
        no_cert = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
        with grpc.secure_channel(mtls.address, no_cert) as ch:
            with pytest.raises(grpc.RpcError) as err:
                orgs_pb2_grpc.OrgServiceStub(ch).ListTiers(orgs_pb2.ListTiersRequest(),
                                                           metadata=_md(mtls.admin_token), timeout=5)  # fmt: skip
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        with_cert = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes(),
                                                 private_key=pki.client_key.read_bytes(),
                                                 certificate_chain=pki.client_cert.read_bytes())  # fmt: skip
        with grpc.secure_channel(mtls.address, with_cert) as ch:
            tiers = orgs_pb2_grpc.OrgServiceStub(ch).ListTiers(orgs_pb2.ListTiersRequest(),
                                                               metadata=_md(mtls.admin_token))  # fmt: skip
            assert len(tiers.tiers) == 4
    finally:
        assert mtls.stop() == 0


def _run_bad(tmp_path: Path, **changes: str | None) -> tuple[int, str, PlaneSecrets]:
    secrets = PlaneSecrets()
    env = control_plane_env(f"sqlite:///{tmp_path / 'x.db'}", secrets, tmp_path / "ready.json")
    for k, v in changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    proc = subprocess.run([sys.executable, "-m", "control_plane"], env=env, cwd=tmp_path, check=False,
                          capture_output=True, timeout=60)  # fmt: skip
    return proc.returncode, proc.stderr.decode(), secrets


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"ODOCK_KEKS": None}, "ODOCK_KEKS: required"),
        ({"ODOCK_KEKS": "k1=bm90LTMyLWJ5dGVz"}, "ODOCK_KEKS: KEK 'k1' must be 32 bytes"),
        ({"ODOCK_KEY_PEPPER": "c2hvcnQ="}, "ODOCK_KEY_PEPPER: must decode to at least 32 bytes"),
        ({"ODOCK_ADMIN_TOKEN": "short"}, "ODOCK_ADMIN_TOKEN: must be at least 32 characters"),
        ({"ODOCK_NODE_TOKENS": None}, "ODOCK_NODE_TOKENS: required"),
        ({"ODOCK_CP_LISTEN": "nonsense"}, "ODOCK_CP_LISTEN: expected HOST:PORT"),
        ({"ODOCK_TLS_CERT_FILE": "/nonexistent.pem"}, "ODOCK_TLS_CERT_FILE: no such file"),
        ({"ODOCK_MIGRATE": "sometimes"}, "ODOCK_MIGRATE: must be 'auto' or 'off'"),
        ({"ODOCK_DATABASE_URL": "mysql://x/y"}, "ODOCK_DATABASE_URL: must be sqlite"),
    ],
)
def test_bad_settings_exit_2_with_one_line(
    tmp_path: Path, changes: dict[str, str | None], needle: str
) -> None:
    code, err, secrets = _run_bad(tmp_path, **changes)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("control-plane: ") and needle in lines[0], err
    for secret in (secrets.admin_token, secrets.node_token, secrets.pepper_b64):
        assert secret not in err


def test_unmigrated_database_with_migrate_off_fails_in_one_line(tmp_path: Path) -> None:
    code, err, _ = _run_bad(tmp_path, ODOCK_MIGRATE="off")
    assert code == 1
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("control-plane: ") and "Traceback" not in err, err


def test_secrets_from_files(tmp_path: Path) -> None:
    secrets = PlaneSecrets()
    files = {}
    for name, value in secrets.control_plane_env().items():
        path = tmp_path / name.lower()
        path.write_text(value + "\n")
        files[f"{name}_FILE"] = str(path)
    env_overrides = {name: "" for name in secrets.control_plane_env()} | files
    cp = start_control_plane(f"sqlite:///{tmp_path / 'cp.db'}", secrets=secrets, extra_env=env_overrides)
    try:
        assert all(k not in cp.env or not cp.env[k] for k in secrets.control_plane_env())
        with grpc.insecure_channel(cp.address) as ch:
            tiers = orgs_pb2_grpc.OrgServiceStub(ch).ListTiers(
                orgs_pb2.ListTiersRequest(), metadata=_md(cp.admin_token)
            )
            assert tiers.tiers
    finally:
        assert cp.stop() == 0
    assert os.path.exists(tmp_path / "cp.db")


def _thread_policies(pid: int) -> dict[int, int]:
    policies = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            policies[int(task.name)] = os.sched_getscheduler(int(task.name))
        except ProcessLookupError:  # a thread that just ended
            continue
    return policies


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux-only")
@pytest.mark.parametrize("setting", [None, "normal", "idle"])
def test_usage_ingest_threads_cpu_priority(tmp_path: Path, setting: str | None) -> None:
    from tests.control_plane.usage.env import batch, record

    extra = {} if setting is None else {"ODOCK_USAGE_INGEST_CPU_PRIORITY": setting}
    cp = start_control_plane(f"sqlite:///{tmp_path / 'cp.db'}", extra_env=extra)
    try:
        with grpc.insecure_channel(cp.address) as ch:
            acks = list(node_pb2_grpc.NodeServiceStub(ch).ReportUsage(
                iter([batch([record(), record()])]), metadata=_md(cp.node_token), timeout=30))  # fmt: skip
        assert [(a.accepted, a.duplicates, a.rejected) for a in acks] == [(2, 0, 0)]
        policies = _thread_policies(cp.pid)
    finally:
        assert cp.stop() == 0, cp.stderr_text()
    assert policies[cp.pid] == os.SCHED_OTHER  # the thread serving the RPCs keeps its priority
    idle = [tid for tid, policy in policies.items() if policy == os.SCHED_IDLE]
    # The batch was validated and stored in the ingest pool's threads, which exist by now.
    assert bool(idle) == (setting == "idle"), policies
