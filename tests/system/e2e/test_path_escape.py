"""Model names that try to leave their slot reach no upstream path but their own."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
import pytest_asyncio

from tests.fakes.provider import FakeProvider
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import ModelSpec, Provisioned, Provisioner, provision_org
from tests.system.e2e import rawhttp
from tests.system.e2e.checks import assert_forwarded, prefix

# As a client would put them in the Gemini path slot (already percent-encoded where needed).
HOSTILE_PATH_NAMES = ["..%2Fx", "../x", "%2e%2e%2f", "%2E%2E%2Fv1%2Fmessages", "a%2Fb", "a/b", "a%3Fb",
                      "a%23b", "a%0D%0AX-Injected:%201", "%00", "x" * 10_240]
# As a client would put them in a JSON body.
HOSTILE_BODY_NAMES = ["../x", "%2e%2e%2f", "a/b", "a?b", "a#b", "a\r\nX-Injected: 1", "\u0000", "x" * 10_240,
                      "../../anthropic/v1/messages"]


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def tricky(cp: ControlPlaneProcess, fake: FakeProvider) -> Provisioned:
    """Valid model names that look like path tricks, with slugs that would escape if not encoded."""
    specs = [ModelSpec("%2e%2e%2f", "gemini", "../../v1/escape"), ModelSpec("..", "gemini", "a?b#c"),
             ModelSpec("dots..", "openai", "../../anthropic/v1/messages"), ModelSpec("%2Fetc", "vllm", "../tokenize")]
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        return await provision_org(admin, fake, specs)


@pytest.mark.parametrize("name", HOSTILE_PATH_NAMES, ids=lambda n: n[:24])
async def test_hostile_names_in_the_gemini_path_reach_nothing(gateway: str, org: Provisioned,
                                                              fake: FakeProvider, name: str) -> None:
    resp = await rawhttp.request(gateway, "POST", f"/v1beta/models/{name}:generateContent",
                                 {"x-goog-api-key": org.key, "Content-Type": "application/json"}, b'{"contents":[]}')
    assert 400 <= resp.status < 500, resp.status
    assert "x-injected" not in resp.headers
    if resp.body:
        assert len(resp.body) < 2048  # a short message, never the 10 KB name echoed back
    assert fake.requests == []


@pytest.mark.parametrize("name", HOSTILE_BODY_NAMES, ids=lambda n: n[:24].encode("unicode_escape").decode())
@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/messages", "/v1/vllm/chat/completions"])
async def test_hostile_names_in_the_body_reach_nothing(gateway: str, org: Provisioned, fake: FakeProvider,
                                                       name: str, route: str) -> None:
    body = json.dumps({"model": name, "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}).encode()
    resp = await rawhttp.request(gateway, "POST", route, {"Authorization": f"Bearer {org.key}",
                                                           "Content-Type": "application/json"}, body)
    assert resp.status == 404, (resp.status, resp.body[:300])
    assert len(resp.body) < 2048 and "x-injected" not in resp.headers
    assert fake.requests == []


async def test_tricky_names_and_slugs_stay_in_their_slot(gateway: str, tricky: Provisioned, fake: FakeProvider) -> None:
    headers = {"Authorization": f"Bearer {tricky.key}", "Content-Type": "application/json"}
    for name in ("%2e%2e%2f", ".."):
        fake.reset()
        # The name itself percent-encoded by the client, as any HTTP client must.
        resp = await rawhttp.request(gateway, "POST", f"/v1beta/models/{quote(name, safe='')}:generateContent",
                                     headers, b'{"contents":[]}')
        assert resp.status == 200, (name, resp.body[:300])
        rec = assert_forwarded(fake, tricky, family="gemini", model=name,
                               path="/v1beta/models/" + quote(tricky.slug(name), safe="") + ":generateContent")
        assert rec.query == {}
        assert rec.raw_path == rec.path  # nothing slipped into a query
        assert rec.raw_path.startswith(prefix(fake, "gemini") + "/v1beta/models/")
    for name, family, route in (("dots..", "openai", "/v1/chat/completions"),
                                ("%2Fetc", "vllm", "/v1/vllm/chat/completions")):
        fake.reset()
        resp = await rawhttp.request(gateway, "POST", route, headers,
                                     json.dumps({"model": name, "messages": []}).encode())
        assert resp.status == 200, (name, resp.body[:300])
        assert_forwarded(fake, tricky, family=family, path="/v1/chat/completions", model=name)


async def test_a_body_model_on_a_path_routed_endpoint_cannot_point_elsewhere(gateway: str, org: Provisioned,
                                                                            fake: FakeProvider) -> None:
    # The path names the granted model; a body "model" the provider might prefer is pinned to the same slug.
    body = b'{"model": "models/some-other-model", "contents": [{"parts": [{"text": "hi"}]}]}'
    resp = await rawhttp.request(gateway, "POST", "/v1beta/models/gemini-flash:generateContent",
                                 {"x-goog-api-key": org.key, "Content-Type": "application/json"}, body)
    assert resp.status == 200, resp.body[:300]
    (rec,) = fake.requests
    assert json.loads(rec.body)["model"] == "models/" + org.slug("gemini-flash")
    assert rec.body.endswith(b', "contents": [{"parts": [{"text": "hi"}]}]}')  # every other byte as sent
