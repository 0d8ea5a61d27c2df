"""The egress policy: its ranges (odock.egress) and the upstream client's connect-time check.

Connect-time tests run real loopback servers and count the connections they accept: a refused
address must not see a single connection, let alone a byte.
"""

from __future__ import annotations

import ipaddress

import pytest

from data_plane.upstream import UpstreamUnreachable
from data_plane.upstream.egress import EGRESS, EgressDenied
from odock.egress import DEFAULT_POLICY, EgressPolicyError, denied_range, parse_spec, policy_for
from tests.data_plane.upstream.conftest import Run
from tests.data_plane.upstream.server import Server
from tests.data_plane.upstream.test_framing import new_client, read_all

REFUSED = {
    "127.0.0.1": "loopback",
    "127.255.0.9": "loopback",
    "::1": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "fd12:3456::1": "private",
    "100.64.0.1": "shared (CGNAT)",
    "169.254.169.254": "link-local",
    "fe80::1": "link-local",
    "0.0.0.0": "unspecified",
    "::": "unspecified",
    "224.0.0.1": "multicast",
    "ff02::1": "multicast",
    "255.255.255.255": "reserved",
    # IPv6 forms of refused IPv4 addresses
    "::ffff:127.0.0.1": "loopback",
    "::ffff:169.254.169.254": "link-local",
    "2002:7f00:1::1": "loopback",  # 6to4 of 127.0.0.1
    "64:ff9b::a9fe:a9fe": "link-local",  # NAT64 of 169.254.169.254
    "::127.0.0.1": "reserved",  # IPv4-compatible (deprecated)
}
PUBLIC = ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1")


@pytest.mark.parametrize(("address", "kind"), REFUSED.items())
def test_default_policy_refuses_non_public_ranges(address: str, kind: str) -> None:
    ip = ipaddress.ip_address(address)
    assert denied_range(ip) == kind
    assert not DEFAULT_POLICY.allowed(ip)


@pytest.mark.parametrize("address", PUBLIC)
def test_default_policy_allows_public_addresses(address: str) -> None:
    assert DEFAULT_POLICY.allowed(ipaddress.ip_address(address))


def test_allow_list_widens_only_what_it_names() -> None:
    policy = policy_for(parse_spec(" 127.0.0.0/8 , ::1, 10.0.0.0/8, vLLM.internal. ,169.254.169.254"))
    assert policy.entries == ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "vllm.internal", "169.254.169.254/32")
    for allowed in ("127.0.0.1", "::ffff:127.0.0.1", "::1", "10.9.9.9", "169.254.169.254", "8.8.8.8"):
        assert policy.allowed(ipaddress.ip_address(allowed)), allowed
    for refused in ("172.16.0.1", "169.254.169.253", "fd00::1", "0.0.0.0"):
        assert not policy.allowed(ipaddress.ip_address(refused)), refused
    assert policy.allows_host("VLLM.internal") and policy.allows_host("vllm.internal.")
    assert not policy.allows_host("other.internal") and not DEFAULT_POLICY.allows_host("localhost")
    assert policy_for(policy.entries) is policy  # parsed once per distinct list


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "a b", "1.2.3", "*", "-x", "a..b", "x" * 300])
def test_bad_allow_list_entries_are_refused(entry: str) -> None:
    with pytest.raises(EgressPolicyError):
        parse_spec(f"127.0.0.1,{entry}")


def test_refused_address_gets_no_connection_and_the_request_an_egress_error(run: Run[None]) -> None:
    async def scenario() -> None:
        async with Server() as server:
            client = new_client()
            EGRESS.set(DEFAULT_POLICY)
            for host in ("127.0.0.1", "localhost"):
                with pytest.raises(EgressDenied) as info:
                    await client.request(
                        "POST", server.url(host=host), {"Authorization": "Bearer sk-x"}, b"{}"
                    )
                assert (info.value.status, info.value.code) == (502, "egress_denied")
            assert server.connections == 0 and server.requests == []
            assert client.status()["in_use"] == 0  # the refused attempt gave its slot back
            await client.close()

    run(scenario())


def test_allowed_loopback_connects(run: Run[None]) -> None:
    async def scenario() -> None:
        async with Server() as server:
            client = new_client()
            for policy in (policy_for(("127.0.0.0/8",)), policy_for(("localhost",))):
                EGRESS.set(policy)
                resp = await client.request("GET", server.url(host="localhost"), {})
                assert await read_all(resp) == b"ok"
                resp.release()
            EGRESS.set(None)  # no policy: the bare client, as before
            resp = await client.request("GET", server.url(), {})
            assert await read_all(resp) == b"ok"
            resp.release()
            assert len(server.requests) == 3
            await client.close()

    run(scenario())


def test_a_name_that_now_resolves_to_a_refused_address_is_refused(
    run: Run[None], fake_dns: dict[str, list[str]]
) -> None:
    async def scenario() -> None:
        async with Server() as server:
            client = new_client()
            EGRESS.set(policy_for(("127.0.0.2/32",)))  # only this loopback address is allowed
            fake_dns["api.rebind.test"] = ["169.254.169.254", "127.0.0.1"]
            with pytest.raises(EgressDenied):
                await client.request("GET", server.url(host="api.rebind.test"), {})
            assert server.connections == 0
            # a refused address among allowed ones is skipped: only the allowed one is tried
            fake_dns["api.rebind.test"] = ["169.254.169.254", "127.0.0.1"]
            EGRESS.set(policy_for(("127.0.0.1/32",)))
            resp = await client.request("GET", server.url(host="api.rebind.test"), {})
            assert await read_all(resp) == b"ok"
            resp.release()
            assert server.connections == 1
            # a name that does not resolve is unreachable, as before
            with pytest.raises(UpstreamUnreachable):
                await client.request("GET", server.url(host="gone.rebind.test"), {})
            await client.close()

    run(scenario())
