"""Trying to get around the egress policy, the loop guards and the base-URL conventions the way a
hostile org admin would: other spellings of internal addresses, URL tricks that make the control
plane judge one host and the data plane connect to another, gateway keys as provider secrets,
and hop-header variants. The control plane here runs with the default policy (no
ODOCK_EGRESS_ALLOW), driven with an org admin token; the hop header goes to the audit gateway.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit

import grpc
import httpx
import pytest
import pytest_asyncio
from google.protobuf.field_mask_pb2 import FieldMask

from control_plane import validation
from data_plane.providers import ENDPOINTS
from data_plane.upstream import UpstreamUnreachable, egress
from data_plane.upstream.egress import EGRESS, EgressDenied, allowed_hosts
from data_plane.upstream.url import split_url
from odock import keyformat
from odock.egress import DEFAULT_POLICY, EgressPolicyError, parse_spec, policy_for
from odock.v1 import admin_tokens_pb2, admin_tokens_pb2_grpc, common_pb2, credentials_pb2, models_pb2
from tests.data_plane.upstream.server import Server
from tests.data_plane.upstream.test_framing import new_client
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess, start_data_plane
from tests.support.planes import ControlPlaneProcess, start_control_plane
from tests.support.provision import Provisioner

Family: TypeAlias = common_pb2.ProviderFamily.ValueType
OPENAI = common_pb2.PROVIDER_FAMILY_OPENAI
ANTHROPIC = common_pb2.PROVIDER_FAMILY_ANTHROPIC
GEMINI = common_pb2.PROVIDER_FAMILY_GEMINI
INVALID = grpc.StatusCode.INVALID_ARGUMENT

# Other spellings of refused addresses: (base URL, the range named in the refusal). The numeric
# IPv4 forms are what the system resolver (inet_aton) reads them as; the control plane must
# judge that reading, since the data plane's resolver connects to it.
SPELLINGS = [
    ("http://2130706433/v1", "loopback"), ("http://0x7f000001/v1", "loopback"),
    ("http://0177.0.0.1/v1", "loopback"), ("http://127.1/v1", "loopback"), ("http://0x7f.1/v1", "loopback"),
    ("http://127.000.000.001/v1", "loopback"), ("http://127.0.0.1./v1", "loopback"),
    ("http://0.0.0.0/v1", "unspecified"), ("http://0/v1", "unspecified"), ("http://[::]/v1", "unspecified"),
    ("http://[::1]/v1", "loopback"), ("http://[0::1]/v1", "loopback"),
    ("http://[::ffff:127.0.0.1]/v1", "loopback"), ("http://[::ffff:7f00:1]/v1", "loopback"),
    ("http://[0:0:0:0:0:ffff:169.254.169.254]/v1", "link-local"), ("http://[::ffff:a9fe:a9fe]/v1", "link-local"),
    ("http://[fe80::1%25eth0]/v1", "link-local"), ("http://[fe80::1]/v1", "link-local"),
    ("http://169.254.169.254/v1", "link-local"), ("http://[2002:a9fe:a9fe::1]/v1", "link-local"),
    ("http://[64:ff9b::7f00:1]/v1", "loopback"), ("http://[::127.0.0.1]/v1", "reserved"),
    ("http://LOCALHOST/v1", "loopback"), ("http://localhost./v1", "loopback"),
    ("http://foo.localhost/v1", "loopback"), ("http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/v1", "loopback"),
    ("http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/v1", "loopback"), ("http://127\u30020\u30020\u30021/v1", "loopback"),
    ("http://metadata.google.internal/v1", "link-local"),  # whether or not it resolves here
    ("http://METADATA.GOOG./v1", "link-local"),
    ("http://instance-data.ec2.internal/v1", "link-local"),
    ("http://10.0.0.1:8443/v1", "private"), ("http://[fd00::1]:80/v1", "private"),
]  # fmt: skip
# Tricks that must be refused as malformed, never judged on one host and connected to another.
MALFORMED = [
    ("http://api.openai.com@127.0.0.1/v1", "userinfo"), ("http://api.openai.com\\@127.0.0.1/v1", "userinfo"),
    ("http://127.0.0.1:80\\@api.openai.com/v1", "userinfo"), ("http://127.0.0.1#@api.openai.com/v1", "fragment"),
    ("http://127.0.0.1?@api.openai.com/v1", "query"), ("http://127.0.0.1:80:80/v1", "not a valid URL"),
    ("http://[127.0.0.1]/v1", "not a valid URL"), ("http://127.0.0.1:0/v1", "port"),
    ("http://a..b/v1", "not a valid host name"), ("http://" + "a" * 64 + ".example/v1", "not a valid host name"),
    ("http://\u00e9" + "a" * 70 + ".example/v1", "not a valid host name"), ("http://.x/v1", "not a valid host name"),
    ("gopher://127.0.0.1/v1", "scheme"), ("http:/127.0.0.1/v1", "host is required"),
    ("http://127.0.0.1\t/v1", "whitespace"), ("http://127.0.0.1/\x00", "control characters"),
]  # fmt: skip


@dataclass
class Strict:
    cp: ControlPlaneProcess
    db: Path
    org_id: str
    org_admin: Provisioner  # an org admin token, not the super-admin


@pytest.fixture(scope="module")
def strict_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("egress-cp") / "cp.db"


@pytest.fixture(scope="module")
def strict_cp(strict_db: Path) -> Iterator[ControlPlaneProcess]:
    """A control plane with the default egress policy (nothing allowed beyond public addresses)."""
    proc = start_control_plane(f"sqlite:///{strict_db}", extra_env={"ODOCK_EGRESS_ALLOW": ""})
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def strict_dp(strict_cp: ControlPlaneProcess) -> Iterator[DataPlaneProcess]:
    """A node of the strict control plane: its routes carry the default policy."""
    proc = start_data_plane(strict_cp.address, strict_cp.node_token, strict_cp.pepper)
    try:
        proc.wait_connected()
        yield proc
    finally:
        proc.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="package")
async def strict(strict_cp: ControlPlaneProcess, strict_db: Path) -> AsyncIterator[Strict]:
    async with Provisioner.connect(strict_cp.address, strict_cp.admin_token) as su:
        org = await su.create_org()
        for family in ("openai", "anthropic", "gemini"):
            await su.create_credential(org.id, family, f"sk-{family}-0123456789", name=family)
        tokens = admin_tokens_pb2_grpc.AdminTokenServiceStub(su.channel)
        minted = await tokens.CreateAdminToken(
            admin_tokens_pb2.CreateAdminTokenRequest(org_id=org.id, name="ops"), metadata=su.metadata
        )
    async with Provisioner.connect(strict_cp.address, minted.secret) as org_admin:
        yield Strict(strict_cp, strict_db, org.id, org_admin)


async def _status(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


def _create(env: Strict, name: str, url: str, family: Family = OPENAI) -> Awaitable[Any]:
    cred = {OPENAI: "openai", ANTHROPIC: "anthropic", GEMINI: "gemini"}[family]
    model = models_pb2.Model(org_id=env.org_id, name=name, family=family, upstream_slug="s", base_url=url,
                             credential=cred)  # fmt: skip
    return env.org_admin.models.CreateModel(
        models_pb2.CreateModelRequest(model=model), metadata=env.org_admin.metadata
    )


def _update(env: Strict, name: str, url: str) -> Awaitable[Any]:
    request = models_pb2.UpdateModelRequest(
        model=models_pb2.Model(org_id=env.org_id, name=name, base_url=url),
        update_mask=FieldMask(paths=["base_url"]),
    )
    return env.org_admin.models.UpdateModel(request, metadata=env.org_admin.metadata)


async def test_other_spellings_of_internal_addresses_are_refused_on_create_and_update(strict: Strict) -> None:
    assert (await _status(_create(strict, "public", "https://8.8.8.8/v1")))[0] == grpc.StatusCode.OK
    for i, (url, kind) in enumerate(SPELLINGS):
        for call in (_create(strict, f"m{i}", url), _update(strict, "public", url)):
            code, msg = await _status(call)
            assert code == INVALID and f"is a {kind} address" in msg, (url, code, msg)


async def test_url_tricks_are_refused_as_malformed_not_crashed_on(strict: Strict) -> None:
    """Before the fix "a..b" and a 64-character label made both RPCs fail with UNKNOWN (an IDNA error)."""
    for i, (url, what) in enumerate(MALFORMED):
        for call in (_create(strict, f"x{i}", url), _update(strict, "public", url)):
            code, msg = await _status(call)
            assert code == INVALID and msg.startswith("model.base_url: ") and what in msg, (url, code, msg)


async def test_names_only_the_nodes_can_resolve_are_left_to_the_connect_time_check(strict: Strict) -> None:
    # not resolvable here: accepted (split-horizon DNS); the node judges what it resolves to
    for i, url in enumerate(("http://only-the-nodes.test/v1", "http://%31%32%37.0.0.1/v1")):
        assert (await _status(_create(strict, f"n{i}", url)))[0] == grpc.StatusCode.OK, url


async def test_the_node_refuses_every_refused_form_a_resolver_can_answer(
    fake_dns: dict[str, list[str]],
) -> None:
    fake_dns["metadata.google.internal"] = ["169.254.169.254"]
    fake_dns["v6.rebind.test"] = ["fe80::a9fe:a9fe%eth0", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe"]
    fake_dns["mixed.rebind.test"] = ["2002:7f00:1::1", "93.184.216.34", "::ffff:10.0.0.1", "not-an-address"]
    for host in ("metadata.google.internal", "v6.rebind.test"):
        with pytest.raises(EgressDenied):
            await allowed_hosts(host, 80, DEFAULT_POLICY)
    assert await allowed_hosts("mixed.rebind.test", 80, DEFAULT_POLICY) == ["93.184.216.34"]
    # the literal spellings, as the node parses the URL the control plane stored
    for url, _ in SPELLINGS:
        origin, _target = split_url(url)
        try:
            await allowed_hosts(origin.host, origin.port, DEFAULT_POLICY)
        except (EgressDenied, OSError):
            continue
        raise AssertionError(f"{url}: the node would connect to {origin.host}")


async def test_a_name_idna_cannot_encode_is_unreachable_not_a_crash() -> None:
    """Rows stored before the control plane refused them: 502 upstream_unreachable, not a 500."""
    client = new_client()
    EGRESS.set(DEFAULT_POLICY)
    try:
        for host in ("a..b", "a" * 64 + ".example"):
            with pytest.raises(UpstreamUnreachable):
                await client.request("GET", f"http://{host}/v1/models", {})
        assert client.status()["in_use"] == 0
    finally:
        EGRESS.set(None)
        await client.close()


async def test_a_name_server_that_never_answers_does_not_hold_the_default_executor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hostile model's name hangs every lookup; the usage journal writes with asyncio.to_thread,
    on the default executor, which before the fix 40 such lookups held (min(32, cpus + 4) threads)."""
    release = threading.Event()
    real = socket.getaddrinfo

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "blackhole.test":
            release.wait(10)
            raise socket.gaierror(socket.EAI_AGAIN, "timed out")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    lookups = [asyncio.ensure_future(egress.system_resolve("blackhole.test", 443)) for _ in range(40)]
    try:
        await asyncio.sleep(0.2)
        async with asyncio.timeout(2):
            assert await asyncio.to_thread(lambda: "journal write") == "journal write"
    finally:
        release.set()
        for outcome in await asyncio.gather(*lookups, return_exceptions=True):
            assert isinstance(outcome, OSError)


async def test_a_refused_literal_never_sees_a_connection() -> None:
    async with Server() as server:
        client = new_client()
        EGRESS.set(DEFAULT_POLICY)
        try:
            for host in ("127.0.0.1", "127.1", "2130706433", "0x7f000001", "localhost"):
                with pytest.raises(EgressDenied):
                    await client.request(
                        "POST", server.url(host=host), {"Authorization": "Bearer sk-x"}, b"{}"
                    )
        finally:
            EGRESS.set(None)
            await client.close()
        assert server.connections == 0


def test_the_node_connects_to_the_host_the_control_plane_judged() -> None:
    """No parser differential: for every base URL the control plane accepts, the upstream URL the
    node builds (whatever the slug) connects to the host the control plane checked."""
    slugs = (
        "x@127.0.0.1",
        "//127.0.0.1/x",
        "../../x",
        "..",
        "a#@127.0.0.1",
        "a?x=@127.0.0.1",
        "a\\@b",
        "%2F..%2F",
    )
    bases = ("https://api.example.com", "https://api.example.com/v1", "https://api.example.com:8443/p/",
             "https://\u00fcber.example/v1", "https://[2606:4700::1111]/v1", "https://API.Example.COM./v1")  # fmt: skip
    for base in bases:
        validation.base_url("f", base)
        judged = (urlsplit(base).hostname or "").encode("idna").decode("ascii")
        for endpoint in ENDPOINTS:
            for slug in slugs:
                origin, target = split_url(endpoint.upstream_url(base, slug, "key=x&alt=sse&@=127.0.0.1"))
                assert origin.host == judged, (base, endpoint.name, slug, origin)
                assert target.startswith("/") and "key=" not in target


async def test_the_node_judges_the_stored_url_whatever_the_control_plane_accepted(
    strict: Strict, strict_dp: DataPlaneProcess, fake: FakeProvider
) -> None:
    """A base URL the control plane could not judge (a legacy row, split-horizon DNS: simulated by
    writing the row directly) is judged again by the node with the policy of its route: nothing
    reaches the loopback upstream, and a host no resolver can encode is a 502, not a 500."""
    async with Provisioner.connect(strict.cp.address, strict.cp.admin_token) as su:
        await su.create_credential(strict.org_id, "openai", fake.secret("openai"), name="fake")
        stored = {
            "to-fake": (fake.base_url("openai"), "egress_denied"),
            "to-metadata": ("http://169.254.169.254/v1", "egress_denied"),
            "to-decimal": ("http://2130706433:1/v1", "egress_denied"),
            "bad-idna": ("http://\u00e9" + "a" * 70 + ".example/v1", "upstream_misconfigured"),
            "unresolvable": ("http://metadata.google.internal/v1", "upstream_unreachable"),
        }
        for name in stored:
            await su.create_model(strict.org_id, name, "openai", "gpt", "https://8.8.8.8/v1", "fake")
        _, key = await su.create_key(strict.org_id)
    with sqlite3.connect(strict.db) as db:
        for name, (url, _) in stored.items():
            db.execute(
                "UPDATE models SET base_url = ? WHERE org_id = ? AND name = ?", (url, strict.org_id, name)
            )
            # Since migration 0007 the route's URL is its deployment's (the models column mirrors it).
            db.execute(
                "UPDATE model_deployments SET base_url = ? WHERE model_id = "
                "(SELECT id FROM models WHERE org_id = ? AND name = ?)",
                (url, strict.org_id, name),
            )
    async with httpx.AsyncClient(base_url=str(strict_dp.url), timeout=20) as client:
        for name, (_, code) in stored.items():
            body = {"model": name, "messages": [{"role": "user", "content": "hi"}]}
            resp = await client.post(
                "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body
            )
            assert resp.status_code == 502 and resp.json()["error"]["code"] == code, (name, resp.text)
    assert fake.requests == []


def test_allow_list_entries_cannot_widen_by_accident() -> None:
    """ "127.0.0.1/0" (host bits set) meant 0.0.0.0/0 -- every address -- before the fix."""
    for entry in ("127.0.0.1/0", "10.0.0.5/8", "::1/0", "169.254.169.254/1"):
        with pytest.raises(EgressPolicyError, match="has host bits set"):
            parse_spec(entry)
    for entry in ("*", "0.0.0.0/-1", "10.0.0.0/8/8", "http://vllm", "vllm:8000", "1.2.3", "[::1]", ""):
        if entry:
            with pytest.raises(EgressPolicyError):
                parse_spec(entry)
    assert parse_spec("") == ()
    everything = policy_for(parse_spec("0.0.0.0/0,::/0"))  # the operator turning the check off: fine
    for address in ("127.0.0.1", "169.254.169.254", "::1", "fe80::1"):
        assert everything.allowed(ipaddress.ip_address(address))
    only = policy_for(parse_spec("10.0.0.0/8"))
    assert only.allowed(ipaddress.ip_address("::ffff:10.1.2.3"))
    assert not only.allowed(ipaddress.ip_address("::ffff:127.0.0.1"))


async def test_gateway_keys_are_refused_as_provider_secrets_in_any_wrapping(strict: Strict) -> None:
    vk, token = keyformat.generate(), keyformat.generate(keyformat.ADMIN_TOKEN_PREFIX)
    creds = strict.org_admin.credentials
    md = strict.org_admin.metadata
    hostile = [vk, token, f" {vk}", f"{vk}\n", f"sk-{vk}", f"{vk}x", f"Bearer{token}", "odk-short", "odka-"]
    for i, secret in enumerate(hostile):
        create = credentials_pb2.CreateCredentialRequest(org_id=strict.org_id, name=f"c{i}", family=OPENAI,
                                                         secret=secret)  # fmt: skip
        rotate = credentials_pb2.RotateCredentialRequest(org_id=strict.org_id, name="openai", secret=secret)
        for call in (
            creds.CreateCredential(create, metadata=md),
            creds.RotateCredential(rotate, metadata=md),
        ):
            code, msg = await _status(call)
            assert code == INVALID and msg.startswith("secret: "), (secret, code, msg)
            assert vk[4:] not in msg and token[5:] not in msg and "short" not in msg  # never echoed
    # a case variant is no gateway key (the format is case-sensitive and checksummed): harmless
    assert not keyformat.is_well_formed(vk.upper()) and not keyformat.is_well_formed("ODK-" + vk[4:])


async def test_conventions_hold_through_the_org_admin_rpc(strict: Strict) -> None:
    code, msg = await _status(_create(strict, "v1-slash", "https://api.anthropic.com/v1/.", ANTHROPIC))
    assert code == INVALID and "drop the trailing /v1" in msg, msg
    code, msg = await _status(_create(strict, "upper", "https://api.openai.com/V1"))
    assert code == INVALID and "paths are case-sensitive" in msg, msg
