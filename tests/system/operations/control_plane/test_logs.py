"""JSON logs of a real control-plane process: one object per line, and no secret in them.

Canary values (tokens, pepper, KEK, database password, a provider secret, a
virtual key and its digest, the sealed credential, a wrong token) go through a
scripted run at debug level; neither stderr nor /metrics may contain any of them.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import grpc

from odock import keyformat, sealing
from odock.v1 import node_pb2, node_pb2_grpc, orgs_pb2, orgs_pb2_grpc
from tests.control_plane.usage.env import batch, record
from tests.support.provision import Provisioner
from tests.system.operations.control_plane.ops import bearer, scrape, start_with_metrics

PROVIDER_SECRET = "sk-canary-provider-" + "Q" * 24
DB_PASSWORD = "pw-canary-database-7f3a9c"
LEVELS = {"debug", "info", "warning", "error", "critical"}


def _spellings(raw: bytes) -> list[str]:
    return [raw.hex(), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("=")]


def _with_password(url: str) -> str:
    # The test cluster trusts 127.0.0.1, so PostgreSQL ignores the password: it only has to leak nowhere.
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{DB_PASSWORD}@")


async def test_json_logs_parse_and_never_contain_a_secret(migrated_db_url: str, tmp_path: Path) -> None:
    url_file = tmp_path / "database-url"
    url_file.write_text(_with_password(migrated_db_url) + "\n")
    env = {"ODOCK_DATABASE_URL": "", "ODOCK_DATABASE_URL_FILE": str(url_file),
           "ODOCK_LOG_FORMAT": "json", "ODOCK_LOG_LEVEL": "debug", "ODOCK_MIGRATE": "off"}  # fmt: skip
    cp, metrics = start_with_metrics(migrated_db_url, env)
    canaries: list[str] = [PROVIDER_SECRET, cp.admin_token, cp.node_token, *_spellings(cp.pepper)]
    canaries += [s for kek in cp.keks.values() for s in _spellings(kek)]
    if migrated_db_url.startswith("postgresql"):
        canaries.append(DB_PASSWORD)
    try:
        canaries += await _scripted_run(cp.address, cp.admin_token, cp.node_token, cp.pepper)
        exposition = scrape(metrics).text
    finally:
        code = cp.stop()
    assert code == 0, cp.stderr_text()
    lines = cp.stderr_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    for rec in records:
        assert {"time", "level", "logger", "message"} <= rec.keys(), rec
        assert rec["level"] in LEVELS and rec["time"].endswith("Z"), rec
    rpc = [r for r in records if r["logger"] == "odock.control_plane.rpc"]
    methods = {r["grpc_method"] for r in rpc}
    assert {"odock.v1.NodeService/ResolveRoute", "odock.v1.VirtualKeyService/CreateVirtualKey"} <= methods
    assert any(r["grpc_code"] == "UNAUTHENTICATED" for r in rpc)
    assert any("usage record rejected" in r["message"] for r in records)
    assert any(r["message"].startswith("shutting down") for r in records)
    text = "\n".join(lines)
    for canary in canaries:
        assert canary not in text, "a secret reached the log"
        assert canary not in exposition, "a secret reached /metrics"


async def _scripted_run(address: str, admin_token: str, node_token: str, pepper: bytes) -> list[str]:
    """Admin and node RPCs touching every kind of secret; the secrets they produced."""
    async with Provisioner.connect(address, admin_token) as admin:
        org = await admin.create_org("canary")
        await admin.create_credential(org.id, "openai", PROVIDER_SECRET, name="cred")
        await admin.create_model(org.id, "m", "openai", "gpt-x", "http://127.0.0.1:9/v1", "cred")
        key_row, key = await admin.create_key(org.id)
        digest = keyformat.digest(pepper, key)
        node: Any = node_pb2_grpc.NodeServiceStub(admin.channel)
        md = bearer(node_token)
        found = await node.ResolveKey(node_pb2.ResolveKeyRequest(key_digest=digest), metadata=md)
        assert found.grant.key_id == key_row.id
        pair = sealing.NodeKeyPair()
        route = await node.ResolveRoute(
            node_pb2.ResolveRouteRequest(org_id=org.id, model_name="m", node_public_key=pair.public_key),
            metadata=md,
        )
        sealed = route.credential_secret.ciphertext
        acks = node.ReportUsage(
            iter([batch([record(org.id, key_id=key_row.id), record(org_id="")])]), metadata=md
        )
        assert [(a.accepted, a.rejected) async for a in acks] == [(1, 1)]
        wrong = keyformat.generate(keyformat.ADMIN_TOKEN_PREFIX)
        orgs: Any = orgs_pb2_grpc.OrgServiceStub(admin.channel)
        try:
            await orgs.ListTiers(orgs_pb2.ListTiersRequest(), metadata=bearer(wrong))
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
        else:
            raise AssertionError("a wrong org admin token was accepted")
    return [
        key,
        wrong,
        *_spellings(digest),
        *_spellings(sealed),
        *_spellings(keyformat.digest(pepper, wrong)),
    ]
