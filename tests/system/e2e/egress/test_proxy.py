"""The node's ``HTTPS_PROXY`` (CONNECT with the URL's credentials, ``NO_PROXY`` bypassing it), a
deployment's own ``proxy_url`` overriding it and ``direct`` bypassing it, weighted deployments
one of which goes through a proxy; a proxy password shows nowhere (node and control-plane
output, admin answers, odockctl, the database file)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from odock.v1 import models_pb2
from tests.odockctl.runner import Ctl
from tests.support.dataplane import DataPlaneProcess
from tests.support.planes import ControlPlaneProcess
from tests.support.private_ca import PrivateCa
from tests.system.e2e.egress.conftest import MakeUpstream, Proxy
from tests.system.e2e.egress.stack import (
    Dep,
    Org,
    assert_nowhere,
    basic,
    connects_to,
    files_text,
    secret_forms,
)
from tests.system.e2e.routing.stack import chat, sdk


def _outputs(*planes: ControlPlaneProcess | DataPlaneProcess) -> list[tuple[str, str]]:
    """Every file in each plane's work directory (stdout and stderr are in it) while it runs."""
    out: list[tuple[str, str]] = []
    for plane in planes:
        out += files_text(p for p in sorted(plane.workdir.rglob("*")) if p.is_file())
        out.append((f"{plane.NAME} stderr", plane.stderr_text()))
    return out


async def test_https_proxy_carries_the_request_and_no_proxy_bypasses_it(
    egress_cp: ControlPlaneProcess, dp_proxied: DataPlaneProcess, dp_no_proxy: DataPlaneProcess,
    env_proxy: Proxy, org: Org, upstream: MakeUpstream, ca: PrivateCa,
) -> None:  # fmt: skip
    up = await upstream("env")
    await org.model("env-proxied", [Dep(up, ca_bundle=ca.pem)])
    async with sdk(dp_proxied.url, org.key) as client:
        for _ in range(2):
            reply = await chat(client, "env-proxied")
            assert reply.status == 200, reply.body
    tunnels = connects_to(env_proxy.server, up.port)
    assert tunnels == [basic(env_proxy.user, env_proxy.password)]  # one tunnel, pooled, with the credentials
    assert len(up.hits) == 2
    async with sdk(dp_no_proxy.url, org.key) as client:
        reply = await chat(client, "env-proxied")
    assert reply.status == 200, reply.body
    assert len(up.hits) == 3 and len(connects_to(env_proxy.server, up.port)) == 1
    # The documented start-up line names the proxy without its credentials (and shows these are its logs).
    assert f"https via 127.0.0.1:{env_proxy.server.port}" in dp_proxied.stderr_text()
    assert_nowhere(
        _outputs(dp_proxied, dp_no_proxy, egress_cp),
        secret_forms(env_proxy.user, env_proxy.password, env_proxy.url),
    )


async def test_a_deployment_proxy_overrides_the_environment_and_direct_bypasses_it(
    egress_cp: ControlPlaneProcess, cp_db: Path, dp_proxied: DataPlaneProcess, env_proxy: Proxy,
    dep_proxy: Proxy, org: Org, upstream: MakeUpstream, ca: PrivateCa,
) -> None:  # fmt: skip
    own, direct = await upstream("own"), await upstream("direct")
    created = await org.model("own-proxy", [Dep(own, proxy_url=dep_proxy.url, ca_bundle=ca.pem)])
    await org.model("no-proxy", [Dep(direct, proxy_url="direct", ca_bundle=ca.pem)])
    async with sdk(dp_proxied.url, org.key) as client:
        assert (await chat(client, "own-proxy")).status == 200
        assert (await chat(client, "no-proxy")).status == 200
    assert connects_to(dep_proxy.server, own.port) == [basic(dep_proxy.user, dep_proxy.password)]
    assert connects_to(env_proxy.server, own.port) == []
    assert connects_to(env_proxy.server, direct.port) == connects_to(dep_proxy.server, direct.port) == []
    assert len(own.hits) == len(direct.hits) == 1

    masked = f"http://{dep_proxy.user}:***@127.0.0.1:{dep_proxy.server.port}"
    got = await org.admin.models.GetModel(models_pb2.GetModelRequest(org_id=org.id, name="own-proxy"),
                                          metadata=org.admin.metadata)  # fmt: skip
    assert created.deployments[0].proxy_url == got.deployments[0].proxy_url == masked
    ctl = Ctl(egress_cp.address, egress_cp.admin_token)
    human, as_json = ctl.ok("model", "get", org.name, "own-proxy").out, ctl.ok("--json", "model", "get", org.name,
                                                                                "own-proxy").out  # fmt: skip
    assert masked in human and masked in as_json
    forms = secret_forms(dep_proxy.user, dep_proxy.password, dep_proxy.url)
    db_files = [cp_db, cp_db.with_name(cp_db.name + "-wal"), cp_db.with_name(cp_db.name + "-journal")]
    stored = files_text(db_files)
    assert any(masked in text for _, text in stored)  # the right database: it holds the masked form
    assert_nowhere([("odockctl", human + as_json), ("GetModel", str(got)), *stored,
                    *_outputs(egress_cp, dp_proxied)], forms)  # fmt: skip


async def test_weighted_deployments_one_through_a_proxy(
    dp_plain: DataPlaneProcess, dep_proxy: Proxy, org: Org, upstream: MakeUpstream, ca: PrivateCa
) -> None:
    via, plain = await upstream("via"), await upstream("plain")
    await org.model("split", [Dep(via, proxy_url=dep_proxy.url, ca_bundle=ca.pem),
                              Dep(plain, ca_bundle=ca.pem)])  # fmt: skip
    served: Counter[str | None] = Counter()
    async with sdk(dp_plain.url, org.key) as client:
        for _ in range(30):
            reply = await chat(client, "split")
            assert reply.status == 200, reply.body
            served[reply.deployment] += 1
    # Equal weights: each at least 5 of 30 (a miss is < 1e-4 likely).
    assert served["via"] >= 5 and served["plain"] >= 5 and served["via"] + served["plain"] == 30, served
    assert len(via.hits) == served["via"] and len(plain.hits) == served["plain"]
    tunnels = connects_to(dep_proxy.server, via.port)
    assert 1 <= len(tunnels) <= served["via"] and set(tunnels) == {basic(dep_proxy.user, dep_proxy.password)}
    assert connects_to(dep_proxy.server, plain.port) == []
