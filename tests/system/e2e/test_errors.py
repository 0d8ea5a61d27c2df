"""Every row of the error table through each family's SDK: class, status, message, code."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import pytest_asyncio

from odock import keyformat
from tests.fakes.provider import FakeProvider
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioned, Provisioner
from tests.system.e2e.errors_sdk import call, check, raised

FAMILIES = ["openai", "anthropic", "gemini", "vllm"]
OWN_MODEL = {"openai": "gpt-chat", "anthropic": "claude", "gemini": "gemini-flash", "vllm": "llama"}
# A model of another family, for provider_not_allowed.
FOREIGN_MODEL = {"openai": "claude", "anthropic": "gpt-chat", "gemini": "llama", "vllm": "gpt-chat"}
CLOSED_PORT_URL = "http://127.0.0.1:9"  # discard port: nothing listens there


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def keys(cp: ControlPlaneProcess, org: Provisioned) -> dict[str, str]:
    """A key limited to gpt-chat, a revoked key, and never-issued ones."""
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        _, limited = await admin.create_key(org.org.id, ["gpt-chat"])
        row, revoked = await admin.create_key(org.org.id)
        await admin.revoke_key(org.org.id, row.id)
    good = keyformat.generate()
    return {"limited": limited, "revoked": revoked, "unknown": good,
            "malformed": good[:-1] + ("A" if good[-1] != "A" else "B")}


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def broken_models(cp: ControlPlaneProcess, org: Provisioned, fake: FakeProvider) -> dict[str, str]:
    """Per family: a model with a 1 s upstream timeout on the fake, and one whose upstream is unreachable."""
    names: dict[str, str] = {}
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        for family in FAMILIES:
            cred = org.credentials[family].name
            await admin.create_model(org.org.id, f"slow-{family}", family, f"slow-{family}-slug",
                                     fake.base_url(family), cred, timeout_s=1.0)
            dead_base = CLOSED_PORT_URL + ("/v1" if family == "openai" else "")
            await admin.create_model(org.org.id, f"dead-{family}", family, f"dead-{family}-slug", dead_base, cred)
            names[f"slow-{family}"] = f"slow-{family}"
            names[f"dead-{family}"] = f"dead-{family}"
    return names


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("which", ["malformed", "unknown", "revoked"])
async def test_bad_keys_are_401(gateway: str, keys: dict[str, str], fake: FakeProvider,
                                family: str, which: str) -> None:
    exc = await raised(family, gateway, keys[which], OWN_MODEL[family])
    check(family, exc, 401, forbidden=keys[which])
    assert fake.requests == []


@pytest.mark.parametrize("family", FAMILIES)
async def test_unknown_model_is_404(gateway: str, org: Provisioned, fake: FakeProvider, family: str) -> None:
    check(family, await raised(family, gateway, org.key, "no-such-model"), 404, forbidden=org.key)
    assert fake.requests == []


@pytest.mark.parametrize("family", FAMILIES)
async def test_model_outside_the_keys_scope_is_403(gateway: str, keys: dict[str, str], fake: FakeProvider,
                                                   family: str) -> None:
    model = {"openai": "image-gen", "anthropic": "claude", "gemini": "gemini-flash", "vllm": "llama"}[family]
    check(family, await raised(family, gateway, keys["limited"], model), 403)
    assert fake.requests == []


async def test_limited_key_reaches_its_model(gateway: str, keys: dict[str, str], fake: FakeProvider) -> None:
    await call("openai", gateway, keys["limited"], "gpt-chat")
    assert len(fake.requests) == 1


@pytest.mark.parametrize("family", FAMILIES)
async def test_wrong_family_is_provider_not_allowed(gateway: str, org: Provisioned, fake: FakeProvider,
                                                   family: str) -> None:
    check(family, await raised(family, gateway, org.key, FOREIGN_MODEL[family]), 400, "provider_not_allowed")
    assert fake.requests == []


@pytest.mark.parametrize("family", FAMILIES)
async def test_upstream_timeout_is_504(gateway: str, broken_models: dict[str, str], org: Provisioned,
                                       fake: FakeProvider, family: str) -> None:
    fake.knobs.delay_before_headers = 5.0
    started = asyncio.get_running_loop().time()
    check(family, await raised(family, gateway, org.key, broken_models[f"slow-{family}"]), 504)
    assert asyncio.get_running_loop().time() - started < 4.0
    rec = fake.last()
    await asyncio.wait_for(rec.finished.wait(), 3.0)  # the gateway gave up on the upstream request
    assert rec.disconnected


@pytest.mark.parametrize("family", FAMILIES)
async def test_unreachable_upstream_is_502(gateway: str, broken_models: dict[str, str], org: Provisioned,
                                           family: str) -> None:
    check(family, await raised(family, gateway, org.key, broken_models[f"dead-{family}"]), 502)


@pytest.mark.parametrize("family", FAMILIES)
async def test_upstream_reset_is_502_not_a_truncated_200(gateway: str, org: Provisioned, fake: FakeProvider,
                                                         family: str) -> None:
    fake.knobs.reset_after = 20
    check(family, await raised(family, gateway, org.key, OWN_MODEL[family]), 502)
    assert fake.last().reset_by_fake


@pytest.mark.parametrize(("family", "status"), [("openai", 429), ("anthropic", 400), ("gemini", 404),
                                                ("vllm", 400)])
async def test_provider_errors_pass_through_unchanged(gateway: str, org: Provisioned, fake: FakeProvider,
                                                      family: str, status: int) -> None:
    fake.knobs.status = status
    fake.knobs.error_message = "fake upstream error: quota for slug"
    message = check(family, await raised(family, gateway, org.key, OWN_MODEL[family]), status)
    assert message == "fake upstream error: quota for slug"


ROUTES = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages",
          "gemini": "/v1beta/models/gemini-flash:generateContent", "vllm": "/v1/vllm/chat/completions"}


def _error_message(family: str, body: dict[str, object]) -> str:
    err = body["error"]
    assert isinstance(err, dict)
    if family == "anthropic":
        assert body["type"] == "error"
    message = err["message"]
    assert isinstance(message, str) and message
    return message


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("body", [b'{"model": "x", "messages": [', b"[1, 2]", b"", b'{"messages": []}'])
async def test_malformed_or_modelless_body_is_400(gateway: str, org: Provisioned, fake: FakeProvider,
                                                  family: str, body: bytes) -> None:
    if family == "gemini" and body == b'{"messages": []}':
        body = b'{"contents": [}'  # gemini's model is in the path: only malformed JSON applies
    async with httpx.AsyncClient(timeout=20) as http:
        resp = await http.post(gateway + ROUTES[family], content=body,
                               headers={"Authorization": f"Bearer {org.key}", "Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text
    _error_message(family, resp.json())
    assert "x-request-id" in resp.headers
    assert fake.requests == []
