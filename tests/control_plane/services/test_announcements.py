"""Admin writes that affect data planes are announced on the Watch stream, in order."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from odock.v1 import credentials_pb2, keys_pb2, models_pb2, node_pb2, orgs_pb2
from tests.control_plane.admin_env import AdminEnv, status_of

KIND = node_pb2.InvalidationKind


async def _take(stream: Any, n: int) -> list[node_pb2.WatchEvent]:
    got: list[node_pb2.WatchEvent] = []
    for _ in range(n + 100):  # bounded: heartbeats come in between
        event = await stream.read()
        assert isinstance(event, node_pb2.WatchEvent), event
        if event.HasField("invalidation"):
            got.append(event)
            if len(got) == n:
                break
    return got


async def test_every_kind_of_change_is_announced_with_consecutive_revisions(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    cred = await cp.credential(org.id)
    await cp.model(org.id, "gpt")  # MODEL
    key = (await cp.key(org.id)).key  # creating a key announces nothing
    watch = cp.node.Watch(node_pb2.WatchRequest(after_revision=0, node_id="t"), metadata=cp.node_md)
    # the watch is live once its first event (a heartbeat) arrives
    first = await watch.read()
    assert isinstance(first, node_pb2.WatchEvent) and first.HasField("heartbeat")
    start = first.revision
    await cp.orgs.UpdateOrg(
        orgs_pb2.UpdateOrgRequest(
            org=orgs_pb2.Org(id=org.id, labels={"a": "b"}), update_mask=FieldMask(paths=["labels"])
        ),
        metadata=cp.su,
    )
    await cp.creds.RotateCredential(
        credentials_pb2.RotateCredentialRequest(org_id=org.id, name="main", secret="sk-rotated-000000000000"),
        metadata=cp.su,
    )
    await cp.keys.RevokeVirtualKey(keys_pb2.RevokeVirtualKeyRequest(org_id=org.id, id=key.id), metadata=cp.su)
    await cp.models.DeleteModel(models_pb2.DeleteModelRequest(org_id=org.id, name="gpt"), metadata=cp.su)
    await cp.creds.DeleteCredential(
        credentials_pb2.DeleteCredentialRequest(org_id=org.id, name="main"), metadata=cp.su
    )
    await cp.orgs.DeleteOrg(orgs_pb2.DeleteOrgRequest(id=org.id, force=True), metadata=cp.su)
    events = await _take(watch, 6)
    watch.cancel()
    seen = [
        (e.invalidation.kind, e.invalidation.org_id, e.invalidation.key_id, e.invalidation.model_name,
         e.invalidation.credential_id)
        for e in events
    ]  # fmt: skip
    assert seen == [
        (KIND.INVALIDATION_KIND_ORG, org.id, "", "", ""),
        (KIND.INVALIDATION_KIND_CREDENTIAL, org.id, "", "", cred.id),
        (KIND.INVALIDATION_KIND_KEY, org.id, key.id, "", ""),
        (KIND.INVALIDATION_KIND_MODEL, org.id, "", "gpt", ""),
        (KIND.INVALIDATION_KIND_CREDENTIAL, org.id, "", "", cred.id),
        (KIND.INVALIDATION_KIND_ORG, org.id, "", "", ""),
    ]
    assert [e.revision for e in events] == list(range(start + 1, start + 7))


async def test_refused_writes_announce_nothing(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    await cp.credential(org.id)
    await cp.model(org.id, "gpt")
    watch = cp.node.Watch(node_pb2.WatchRequest(after_revision=0, node_id="t"), metadata=cp.node_md)
    first = await watch.read()
    assert isinstance(first, node_pb2.WatchEvent)
    # refused: credential in use, non-empty org, invalid update; then one real change as a marker
    for call in (
        cp.creds.DeleteCredential(credentials_pb2.DeleteCredentialRequest(org_id=org.id, name="main"), metadata=cp.su),
        cp.orgs.DeleteOrg(orgs_pb2.DeleteOrgRequest(id=org.id), metadata=cp.su),
        cp.models.UpdateModel(
            models_pb2.UpdateModelRequest(model=models_pb2.Model(org_id=org.id, name="gpt", base_url="ftp://x"),
                                          update_mask=FieldMask(paths=["base_url"])),
            metadata=cp.su,
        ),
    ):  # fmt: skip
        code, _ = await status_of(call)
        assert code != grpc.StatusCode.OK
    await cp.models.DeleteModel(models_pb2.DeleteModelRequest(org_id=org.id, name="gpt"), metadata=cp.su)
    events = await _take(watch, 1)
    watch.cancel()
    assert events[0].invalidation.kind == KIND.INVALIDATION_KIND_MODEL
    assert events[0].revision == first.revision + 1
