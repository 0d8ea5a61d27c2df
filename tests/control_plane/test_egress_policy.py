"""The egress policy at the control plane: models may not point at loopback, private or link-local
addresses unless the operator's ODOCK_EGRESS_ALLOW says so, and no admin RPC can widen it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.field_mask_pb2 import FieldMask

from control_plane.services.models import ModelServicer
from control_plane.settings import Settings, SettingsError
from odock.egress import parse_spec
from odock.sealing import NodeKeyPair
from odock.v1 import (
    admin_tokens_pb2,
    credentials_pb2,
    keys_pb2,
    models_pb2,
    node_pb2,
    orgs_pb2,
    usage_pb2,
)
from tests.control_plane.admin_env import OPENAI, AdminEnv, bearer, expect, open_admin_env
from tests.support.secrets import PlaneSecrets

INVALID = grpc.StatusCode.INVALID_ARGUMENT
FORBIDDEN = {
    "http://127.0.0.1:8000/v1": "loopback",
    "http://10.0.0.5/v1": "private",
    "http://169.254.169.254/v1": "link-local",
    "http://[::1]:8000/v1": "loopback",
    "http://[::ffff:127.0.0.1]:8000/v1": "loopback",
    "http://[::ffff:169.254.169.254]/v1": "link-local",
    "http://0.0.0.0:8000/v1": "unspecified",
    "http://localhost:8000/v1": "loopback",
    "http://api.localhost/v1": "loopback",
    "http://2130706433/v1": "loopback",  # 127.0.0.1 as one number: the resolver's reading counts
    "http://100.100.100.200/v1": "shared (CGNAT)",  # the Alibaba Cloud metadata address
    "http://[fd00::1]/v1": "private",
}


@pytest.fixture
async def strict(migrated_db_url: str) -> AsyncIterator[AdminEnv]:
    """A control plane with the default policy (no ODOCK_EGRESS_ALLOW)."""
    async with open_admin_env(migrated_db_url) as env:
        yield env


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The egress check's resolver seam: what names resolve to, as the test says."""
    answers: dict[str, list[str]] = {}

    async def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            raise OSError("Name or service not known")
        return answers[host]

    monkeypatch.setattr(ModelServicer, "resolve", staticmethod(resolve))  # restored as the staticmethod
    return answers


async def _setup(env: AdminEnv) -> str:
    org = await env.org("acme")
    await env.credential(org.id)
    return org.id


async def test_models_pointing_at_internal_addresses_are_refused(strict: AdminEnv) -> None:
    org_id = await _setup(strict)
    org_admin = bearer(await strict.org_token(org_id))
    for i, (url, kind) in enumerate(FORBIDDEN.items()):
        msg = await expect(INVALID, strict.model(org_id, f"m{i}", base_url=url))
        assert msg.startswith("model.base_url: ") and f"is a {kind} address" in msg, msg
        assert "ODOCK_EGRESS_ALLOW" in msg
        # an org admin is refused the same way
        request = models_pb2.CreateModelRequest(model=models_pb2.Model(
            org_id=org_id, name=f"o{i}", family=OPENAI, upstream_slug="s", base_url=url, credential="main"))  # fmt: skip
        assert (await expect(INVALID, strict.models.CreateModel(request, metadata=org_admin))) == msg
    ok = await strict.model(org_id, "public", base_url="https://8.8.8.8/v1")
    assert ok.base_url == "https://8.8.8.8/v1"
    # changing a model's base URL is checked too
    update = models_pb2.UpdateModelRequest(
        model=models_pb2.Model(org_id=org_id, name="public", base_url="http://169.254.169.254/latest"),
        update_mask=FieldMask(paths=["base_url"]),
    )
    for metadata in (strict.su, org_admin):
        msg = await expect(INVALID, strict.models.UpdateModel(update, metadata=metadata))
        assert msg.startswith("model.base_url: 169.254.169.254 is a link-local address"), msg
    got = await strict.models.GetModel(
        models_pb2.GetModelRequest(org_id=org_id, name="public"), metadata=strict.su
    )
    assert got.base_url == "https://8.8.8.8/v1"


async def test_names_are_resolved_and_unresolvable_ones_left_to_the_data_plane(
    strict: AdminEnv, dns: dict[str, list[str]]
) -> None:
    org_id = await _setup(strict)
    dns["metadata.attacker.test"] = ["93.184.216.34", "169.254.169.254"]
    msg = await expect(INVALID, strict.model(org_id, "a", base_url="http://metadata.attacker.test/v1"))
    assert msg.startswith(
        "model.base_url: metadata.attacker.test (169.254.169.254) is a link-local address"
    ), msg
    dns["public.example.test"] = ["93.184.216.34", "2606:2800:220:1::1"]
    await strict.model(org_id, "b", base_url="https://public.example.test/v1")
    # not resolvable here (split-horizon DNS, not created yet): accepted; each node checks at connect
    await strict.model(org_id, "c", base_url="https://only-the-nodes-resolve.test/v1")


async def test_the_operator_allow_list_admits_what_it_names(migrated_db_url: str) -> None:
    allow = parse_spec("127.0.0.0/8,::1,10.0.0.0/8,169.254.169.254,localhost")
    async with open_admin_env(migrated_db_url, egress_allow=allow) as env:
        org_id = await _setup(env)
        for i, url in enumerate(FORBIDDEN):
            kind = FORBIDDEN[url]
            if kind in ("unspecified", "shared (CGNAT)") or "fd00" in url:  # not on the list
                assert "is a" in await expect(INVALID, env.model(org_id, f"m{i}", base_url=url))
            else:
                assert (await env.model(org_id, f"m{i}", base_url=url)).base_url == url
        # the nodes get the same list with every route
        route = await env.node.ResolveRoute(
            node_pb2.ResolveRouteRequest(
                org_id=org_id, model_name="m0", node_public_key=NodeKeyPair().public_key, node_id="n"
            ),
            metadata=env.node_md,
        )
        assert tuple(route.egress_allow) == allow


async def test_an_unchanged_base_url_is_not_judged_again(migrated_db_url: str) -> None:
    """A model created while loopback was allowed can still get other changes after the policy tightened."""
    async with open_admin_env(migrated_db_url, egress_allow=("127.0.0.0/8",)) as env:
        org_id = await _setup(env)
        await env.model(org_id, "local", base_url="http://127.0.0.1:8000/v1")
    async with open_admin_env(migrated_db_url) as env:
        changed = await env.models.UpdateModel(models_pb2.UpdateModelRequest(
            model=models_pb2.Model(org_id=org_id, name="local", base_url="http://127.0.0.1:8000/v1", enabled=False),
            update_mask=FieldMask(paths=["base_url", "enabled"])), metadata=env.su)  # fmt: skip
        assert not changed.enabled
        msg = await expect(INVALID, env.models.UpdateModel(models_pb2.UpdateModelRequest(
            model=models_pb2.Model(org_id=org_id, name="local", base_url="http://127.0.0.2:8000/v1"),
            update_mask=FieldMask(paths=["base_url"])), metadata=env.su))  # fmt: skip
        assert "loopback" in msg


def _fields(descriptor: Descriptor, seen: set[str]) -> Iterator[str]:
    if descriptor.full_name in seen:
        return
    seen.add(descriptor.full_name)
    for field in descriptor.fields:
        yield field.name
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
            yield from _fields(field.message_type, seen)


def test_no_admin_rpc_can_widen_the_policy() -> None:
    """The allow list is the operator's environment only: no admin request message has such a field."""
    admin_files = (orgs_pb2, credentials_pb2, models_pb2, keys_pb2, admin_tokens_pb2, usage_pb2)
    names: set[str] = set()
    methods = 0
    for module in admin_files:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                methods += 1
                names.update(_fields(method.input_type, set()))
    assert methods > 20 and "base_url" in names  # the walk does see the request fields
    assert not [n for n in names if "egress" in n]


def test_setting_is_parsed_and_checked() -> None:
    env = PlaneSecrets().control_plane_env()
    assert Settings.from_env(env).egress_allow == ()
    env["ODOCK_EGRESS_ALLOW"] = "127.0.0.1, 10.0.0.0/8 ,vllm"
    assert Settings.from_env(env).egress_allow == ("127.0.0.1/32", "10.0.0.0/8", "vllm")
    env["ODOCK_EGRESS_ALLOW"] = "10.0.0.0/8,not a host"
    with pytest.raises(SettingsError, match="^ODOCK_EGRESS_ALLOW: 'not a host' is neither"):
        Settings.from_env(env)
