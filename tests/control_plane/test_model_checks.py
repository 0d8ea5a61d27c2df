"""Configuration mistakes refused with the fix: base URLs against each family's convention, and
gateway keys where a provider key belongs (a model pointed at a gateway with a virtual key loops)."""

from __future__ import annotations

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from odock import keyformat
from odock.v1 import common_pb2, credentials_pb2, models_pb2
from tests.control_plane.admin_env import ANTHROPIC, OPENAI, AdminEnv, bearer, expect

INVALID = grpc.StatusCode.INVALID_ARGUMENT
GEMINI = common_pb2.PROVIDER_FAMILY_GEMINI
VLLM = common_pb2.PROVIDER_FAMILY_VLLM

# (family, base_url, what the one-line message must say)
REFUSED = [
    (ANTHROPIC, "https://api.anthropic.com/v1", "an anthropic base URL is the server root (the SDK path includes /v1); drop the trailing /v1"),
    (ANTHROPIC, "https://proxy.example.com/anthropic/v1/", "drop the trailing /v1"),
    (ANTHROPIC, "https://api.anthropic.com/v1/messages", "must not include the endpoint path ('/v1/messages')"),
    (GEMINI, "https://generativelanguage.googleapis.com/v1beta", "a gemini base URL is the server root (the SDK path includes /v1beta); drop the trailing /v1beta"),
    (GEMINI, "https://generativelanguage.googleapis.com/v1", "drop the trailing /v1"),
    (OPENAI, "https://api.openai.com", "the OpenAI API's base URL is https://api.openai.com/v1 (add /v1)"),
    (OPENAI, "https://api.openai.com/", "add /v1"),
    (OPENAI, "https://api.openai.com/v1/chat/completions", "must not include the endpoint path"),
    (VLLM, "http://vllm.example.com:8000/v1/chat/completions", "must not include the endpoint path"),
]  # fmt: skip
# Legitimate: OpenAI-compatible servers under other prefixes or at the root, vLLM with /v1.
ACCEPTED = [
    (OPENAI, "https://api.openai.com/v1"),
    (OPENAI, "https://my-resource.openai.azure.com/openai/v1"),
    (OPENAI, "https://api.groq.com/openai/v1"),
    (OPENAI, "https://openrouter.ai/api/v1"),
    (OPENAI, "https://api.deepseek.com"),
    (OPENAI, "https://generativelanguage.googleapis.com/v1beta/openai"),
    (ANTHROPIC, "https://api.anthropic.com"),
    (ANTHROPIC, "https://proxy.example.com/anthropic"),
    (GEMINI, "https://generativelanguage.googleapis.com"),
    (VLLM, "http://vllm.example.com:8000"),
    (VLLM, "http://vllm.example.com:8000/v1"),
]


async def _org(cp: AdminEnv) -> str:
    org = await cp.org("acme")
    for family, name in ((OPENAI, "openai"), (ANTHROPIC, "anthropic"), (GEMINI, "gemini"), (VLLM, "vllm")):
        await cp.credential(org.id, name, family=family)
    return org.id


def _cred(family: int) -> str:
    names: dict[int, str] = {OPENAI: "openai", ANTHROPIC: "anthropic", GEMINI: "gemini", VLLM: "vllm"}
    return names[family]


async def test_base_urls_against_the_family_convention(cp: AdminEnv) -> None:
    org_id = await _org(cp)
    for i, (family, url, says) in enumerate(REFUSED):
        msg = await expect(INVALID, cp.model(org_id, f"bad{i}", _cred(family), family=family, base_url=url))
        assert msg.startswith("model.base_url: ") and says in msg, (url, msg)
    for i, (family, url) in enumerate(ACCEPTED):
        model = await cp.model(org_id, f"ok{i}", _cred(family), family=family, base_url=url)
        assert model.base_url == url


async def test_update_checks_the_convention_of_the_result(cp: AdminEnv) -> None:
    org_id = await _org(cp)
    await cp.model(org_id, "claude", "anthropic", family=ANTHROPIC, base_url="https://api.anthropic.com")
    to_v1 = models_pb2.UpdateModelRequest(
        model=models_pb2.Model(org_id=org_id, name="claude", base_url="https://api.anthropic.com/v1"),
        update_mask=FieldMask(paths=["base_url"]),
    )
    msg = await expect(INVALID, cp.models.UpdateModel(to_v1, metadata=cp.su))
    assert msg == (
        "model.base_url: an anthropic base URL is the server root (the SDK path includes /v1); drop the trailing /v1"
    )
    # a family change that would leave an OpenAI-style URL on a Gemini model
    await cp.model(org_id, "gpt", "openai", base_url="https://gw.example.com/v1beta")
    to_gemini = models_pb2.UpdateModelRequest(
        model=models_pb2.Model(org_id=org_id, name="gpt", family=GEMINI, credential="gemini"),
        update_mask=FieldMask(paths=["family", "credential"]),
    )
    assert "drop the trailing /v1beta" in await expect(
        INVALID, cp.models.UpdateModel(to_gemini, metadata=cp.su)
    )


async def test_gateway_keys_are_refused_as_provider_secrets(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    virtual = (await cp.key(org.id)).secret
    org_token = await cp.org_token(org.id)
    assert keyformat.is_well_formed(virtual) and keyformat.is_well_formed(
        org_token, keyformat.ADMIN_TOKEN_PREFIX
    )
    for i, secret in enumerate((virtual, org_token, f"Bearer-{virtual}", "odk-not-even-well-formed")):
        msg = await expect(INVALID, cp.credential(org.id, f"c{i}", secret=secret))
        assert msg == (
            "secret: is an Odock key (odk-/odka-); a credential holds the provider's own key, not a gateway key"
        )
    await cp.credential(org.id, "main")
    for metadata in (cp.su, bearer(org_token)):
        rotate = credentials_pb2.RotateCredentialRequest(org_id=org.id, name="main", secret=virtual)
        msg = await expect(INVALID, cp.creds.RotateCredential(rotate, metadata=metadata))
        assert msg.startswith("secret: is an Odock key") and virtual[4:] not in msg
    # provider keys that merely contain the letters are fine
    await cp.credential(org.id, "lookalike", secret="sk-proj-abcodk-xyz0123456789")
