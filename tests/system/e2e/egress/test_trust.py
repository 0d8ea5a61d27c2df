"""A TLS upstream whose certificate only a private CA signs: trusted through a deployment's
``ca_bundle`` (admin gRPC API and ``odockctl --deployment ...,ca-file=``) or the node's
``SSL_CERT_FILE``; refused (502, no HTTP request upstream) otherwise."""

from __future__ import annotations

from pathlib import Path

from tests.odockctl.runner import Ctl
from tests.support.dataplane import DataPlaneProcess
from tests.support.planes import ControlPlaneProcess
from tests.support.private_ca import PrivateCa
from tests.system.e2e.egress.conftest import MakeUpstream
from tests.system.e2e.egress.stack import Dep, Org
from tests.system.e2e.routing.stack import chat, sdk


async def test_a_deployment_ca_bundle_makes_the_private_ca_trusted(
    dp_plain: DataPlaneProcess, org: Org, upstream: MakeUpstream, ca: PrivateCa
) -> None:
    up = await upstream("tls")
    await org.model("trusted", [Dep(up, ca_bundle=ca.pem)])
    await org.model("untrusted", [Dep(up)])
    async with sdk(dp_plain.url, org.key) as client:
        ok = await chat(client, "trusted")
        assert ok.status == 200, ok.body
        assert ok.body["choices"][0]["message"]["content"]
        assert len(up.hits) == 1 and up.hits[0].model == "tls-slug"
        refused = await chat(client, "untrusted")
    assert refused.status == 502, refused.body
    assert refused.error()["code"] == "upstream_unreachable", refused.body
    assert len(up.hits) == 1  # the handshake failed: no HTTP request reached the upstream


async def test_odockctl_ca_file_makes_the_private_ca_trusted(
    egress_cp: ControlPlaneProcess,
    dp_plain: DataPlaneProcess,
    org: Org,
    upstream: MakeUpstream,
    ca_file: Path,
) -> None:
    up = await upstream("cli")
    credential = await org.credential(up)
    ctl = Ctl(egress_cp.address, egress_cp.admin_token)
    dep = f"name=cli,base-url={up.base_url},credential={credential},slug={up.slug}"
    ctl.ok(
        "model",
        "create",
        org.name,
        "via-cli",
        "--family",
        "openai",
        "--deployment",
        f"{dep},ca-file={ca_file}",
    )
    ctl.ok("model", "create", org.name, "via-cli-bare", "--family", "openai", "--deployment", dep)
    async with sdk(dp_plain.url, org.key) as client:
        ok = await chat(client, "via-cli")
        bare = await chat(client, "via-cli-bare")
    assert ok.status == 200, ok.body
    assert bare.status == 502, bare.body
    assert len(up.hits) == 1


async def test_ssl_cert_file_trusts_the_private_ca_without_a_bundle(
    dp_ssl_cert_file: DataPlaneProcess, dp_plain: DataPlaneProcess, org: Org, upstream: MakeUpstream
) -> None:
    up = await upstream("sys")
    await org.model("system-store", [Dep(up)])
    async with sdk(dp_ssl_cert_file.url, org.key) as client:
        ok = await chat(client, "system-store")
    assert ok.status == 200, ok.body
    async with sdk(dp_plain.url, org.key) as client:  # the same model, on a node without it
        refused = await chat(client, "system-store")
    assert refused.status == 502, refused.body
    assert len(up.hits) == 1
