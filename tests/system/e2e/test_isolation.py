"""Org isolation: the same model name in two orgs reaches two slugs; a key never crosses orgs."""

from __future__ import annotations

import pytest_asyncio

from tests.fakes.provider import FakeProvider
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import ModelSpec, Provisioned, Provisioner, provision_org
from tests.system.e2e.checks import TEXT, assert_forwarded
from tests.system.e2e.errors_sdk import call, check, raised

SHARED = [ModelSpec("shared", "openai", "shared-slug"), ModelSpec("shared-g", "gemini", "shared-g-slug"),
          ModelSpec("shared-c", "anthropic", "shared-c-slug")]


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def two_orgs(cp: ControlPlaneProcess, fake: FakeProvider) -> tuple[Provisioned, Provisioned]:
    """Orgs A and B with the same model names and different slugs; B also has a model A lacks."""
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        a = await provision_org(admin, fake, SHARED, slug_suffix="-org-a")
        b = await provision_org(admin, fake, [*SHARED, ModelSpec("only-b", "openai", "only-b-slug")],
                                slug_suffix="-org-b")
    return a, b


async def test_same_name_reaches_each_orgs_own_slug(gateway: str, fake: FakeProvider,
                                                    two_orgs: tuple[Provisioned, Provisioned]) -> None:
    for org in two_orgs:
        for family, model in (("openai", "shared"), ("gemini", "shared-g"), ("anthropic", "shared-c")):
            fake.reset()
            await call(family, gateway, org.key, model)
            path = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages",
                    "gemini": f"/v1beta/models/{org.slug(model)}:generateContent"}[family]
            assert_forwarded(fake, org, family=family, path=path, model=model)
    assert two_orgs[0].slug("shared") == "shared-slug-org-a" and two_orgs[1].slug("shared") == "shared-slug-org-b"
    assert TEXT


async def test_key_never_reaches_another_orgs_model(gateway: str, fake: FakeProvider,
                                                    two_orgs: tuple[Provisioned, Provisioned],
                                                    org: Provisioned) -> None:
    a, b = two_orgs
    check("openai", await raised("openai", gateway, a.key, "only-b"), 404)
    check("openai", await raised("openai", gateway, b.key, "gpt-chat"), 404)  # the main org's model
    check("openai", await raised("openai", gateway, org.key, "shared"), 404)
    assert fake.requests == []
