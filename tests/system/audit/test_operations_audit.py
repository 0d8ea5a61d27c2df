"""Issue 11, sections 5-7, from the outside: request ids on records, ``odockctl usage list``,
the public /readyz, ``--version``, apply with revoked keys. Real planes, httpx, the real ``odockctl``."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.data_plane.limits.stack import free_port
from tests.data_plane.usage.stack import UsageQueries
from tests.fakes.provider import FakeProvider
from tests.odockctl.runner import ODOCK, ODOCKCTL, Ctl, Result, assert_one_line_error, console_script
from tests.support.dataplane import DataPlaneProcess
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioned, Provisioner, provision_org

CHAT = {"model": "gpt-chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def ctl(cp: ControlPlaneProcess) -> Ctl:
    return Ctl(cp.address, cp.admin_token)


async def _ctl(ctl: Ctl, *args: str) -> Result:
    return await asyncio.to_thread(ctl.run, *args)


async def _chat(gateway: str, key: str, headers: list[tuple[bytes, bytes]] | None = None) -> httpx.Response:
    hdrs = [(b"authorization", f"Bearer {key}".encode()), (b"content-type", b"application/json")]
    async with httpx.AsyncClient(timeout=20) as client:
        return await client.post(
            f"{gateway}/v1/chat/completions", content=json.dumps(CHAT), headers=hdrs + list(headers or [])
        )


async def _record_client_id(cp: ControlPlaneProcess, request_id: str) -> str:
    queries = UsageQueries(cp)
    try:
        return (await queries.record(request_id)).client_request_id
    finally:
        await queries.close()


@pytest.mark.parametrize(("sent", "kept"), [
    (b"a" * 128, True),
    (b"a" * 129, False),
    (b"with space", False),
    ("caf\u00e9".encode("latin-1"), False),
    ("\u00e9t\u00e9".encode(), False),
    (b"", False),
    (b"ok.id:1-_", True),
    (b'quote"d', False),
])  # fmt: skip
async def test_client_request_id_is_stored_exactly_when_echoed(
    gateway: str, ctl: Ctl, cp: ControlPlaneProcess, org: Provisioned, sent: bytes, kept: bool
) -> None:
    resp = await _chat(gateway, org.key, [(b"x-request-id", sent)])
    assert resp.status_code == 200
    rid = resp.headers["x-odock-request-id"]
    echoed = resp.headers["x-request-id"]
    assert (echoed == sent.decode("latin-1")) is kept and (echoed == rid) is not kept
    assert await _record_client_id(cp, rid) == (sent.decode() if kept else "")
    if kept:
        listed = (await _ctl(ctl, "--json", "usage", "list", "--client-request-id", sent.decode())).json()
        assert rid in [r["request_id"] for r in listed["records"]]


async def test_client_request_id_sent_twice_stores_what_was_echoed(
    gateway: str, cp: ControlPlaneProcess, org: Provisioned
) -> None:
    resp = await _chat(gateway, org.key, [(b"x-request-id", b"first"), (b"x-request-id", b"second")])
    assert resp.status_code == 200
    echoed = resp.headers.get_list("x-request-id")
    assert len(echoed) == 1
    rid = resp.headers["x-odock-request-id"]
    stored = await _record_client_id(cp, rid)
    assert stored == ("" if echoed[0] == rid else echoed[0])


@pytest.mark.parametrize(("args", "code", "needle"), [
    (["--limit", "100000"], 2, "--limit"),
    (["--limit", "-1"], 2, "--limit"),
    (["--limit", "abc"], 2, "--limit"),
    (["--since", "yesterday"], 2, "--since"),
    (["--until", "soon"], 2, "--until"),
    (["--client-request-id", "x" * 129], 1, "client_request_id"),
    (["--request-id", "x" * 10_000], 1, "request_id"),
])  # fmt: skip
async def test_usage_list_bad_values_are_one_line(ctl: Ctl, args: list[str], code: int, needle: str) -> None:
    line = assert_one_line_error(await _ctl(ctl, "usage", "list", *args), code, needle)
    assert len(line) < 400


async def test_a_page_token_from_another_listing_is_refused(gateway: str, ctl: Ctl, org: Provisioned) -> None:
    for _ in range(3):
        assert (await _chat(gateway, org.key)).status_code == 200
    first: dict[str, Any] = {}
    for _ in range(100):
        first = (await _ctl(ctl, "--json", "usage", "list", org.org.name, "--limit", "1")).json()
        if first["next_page_token"]:
            break
        await asyncio.sleep(0.2)
    token = first["next_page_token"]
    assert token
    args = ["usage", "list", org.org.name, "--model", "gpt-chat", "--limit", "1", "--page-token", token]
    assert_one_line_error(await _ctl(ctl, *args), 1, "page_token")


async def test_paging_walks_every_record_once(
    gateway: str, ctl: Ctl, cp: ControlPlaneProcess, org: Provisioned
) -> None:
    rids = []
    for _ in range(7):
        resp = await _chat(gateway, org.key, [(b"x-request-id", b"paging-walk")])
        rids.append(resp.headers["x-odock-request-id"])
    for rid in rids:
        assert await _record_client_id(cp, rid) == "paging-walk"
    seen: list[str] = []
    token = ""
    for _ in range(10):
        args = ["--json", "usage", "list", "--client-request-id", "paging-walk", "--limit", "2"]
        page = (await _ctl(ctl, *args, *(["--page-token", token] if token else []))).json()
        assert len(page["records"]) <= 2
        seen += [r["request_id"] for r in page["records"]]
        token = page["next_page_token"]
        if not token:
            break
    assert sorted(seen) == sorted(rids) and len(seen) == len(set(seen))


def _ids_in(text: str) -> list[str]:
    return [w for w in ("org_", "key_", "node_", "req_", "wrk_") if w in text]


def test_public_readyz_shows_status_only(dp: DataPlaneProcess) -> None:
    resp = dp.public_status()
    assert resp.status_code == 200
    assert _ids_in(resp.text) == [] and len(resp.text) < 200, resp.text
    assert httpx.get(f"{dp.url}/readyz/details", timeout=5).status_code == 404
    details = httpx.get(f"{dp.metrics_url}/readyz/details", timeout=5)
    assert details.status_code == 200 and details.json()["node_id"]


@pytest.mark.parametrize("argv", [
    ODOCK, ODOCKCTL, console_script("control-plane", "control_plane"), console_script("data-plane", "data_plane"),
])  # fmt: skip
def test_version_needs_no_state(argv: list[str], tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [*argv, "--version"], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().split()[-1][0].isdigit(), done.stdout
    assert list(tmp_path.iterdir()) == []  # no state dir, no home, nothing written


async def _error_record(cp: ControlPlaneProcess, resp: httpx.Response) -> tuple[int, str]:
    queries = UsageQueries(cp)
    try:
        rec = await queries.record(resp.headers["x-odock-request-id"])
    finally:
        await queries.close()
    return rec.http_status, rec.error_code


async def test_gateway_errors_are_recorded_with_their_code(
    gateway: str, cp: ControlPlaneProcess, admin: Provisioner, fake: FakeProvider
) -> None:
    org = await provision_org(admin, fake)  # its own: the models added below must not reach shared listings
    _, narrow = await admin.create_key(org.org.id, models=["claude"])
    cred = org.credentials["openai"].name
    await admin.create_model(
        org.org.id, "gpt-dead", "openai", "gpt-x", f"http://127.0.0.1:{free_port()}/v1", cred
    )
    await admin.create_model(org.org.id, "gpt-slow", "openai", "gpt-slow", fake.base_url("openai"), cred,
                             timeout_s=0.5)  # fmt: skip
    fake.knobs.delay_before_headers = 3.0
    cases: list[tuple[str, bytes, int, str]] = [
        (narrow, json.dumps(CHAT).encode(), 403, "model_not_allowed"),
        (org.key, json.dumps({**CHAT, "model": "no-such-model"}).encode(), 404, "model_not_found"),
        (org.key, json.dumps({**CHAT, "model": "gpt-dead"}).encode(), 502, "upstream_unreachable"),
        (org.key, json.dumps({**CHAT, "model": "gpt-slow"}).encode(), 504, "upstream_timeout"),
        (org.key, b"{not json", 400, "invalid_json"),
    ]
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(timeout=20) as client:
        for key, body, status, code in cases:
            resp = await client.post(f"{gateway}/v1/chat/completions", content=body,
                                     headers={**headers, "authorization": f"Bearer {key}"})  # fmt: skip
            assert resp.status_code == status, (status, resp.text[:300])
            assert resp.json()["error"]["code"] == code, (status, resp.text[:300])
            assert await _error_record(cp, resp) == (status, code), status


async def _chunks(size: int) -> AsyncIterator[bytes]:
    yield b'{"model": "gpt-chat", "messages": ['
    for _ in range(size // 65536):
        yield b" " * 65536
    yield b"]}"


async def test_an_oversized_body_is_recorded_when_chunked_and_refused_before_auth_when_declared(
    gateway: str, cp: ControlPlaneProcess, org: Provisioned
) -> None:
    auth = {"content-type": "application/json", "authorization": f"Bearer {org.key}"}
    async with httpx.AsyncClient(timeout=20) as client:
        chunked = await client.post(f"{gateway}/v1/chat/completions", content=_chunks(2 << 20), headers=auth)
        assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "request_too_large"
        assert await _error_record(cp, chunked) == (413, "request_too_large")
        # Declared too large: refused from Content-Length before anything else (docs/usage.md).
        declared = await client.post(f"{gateway}/v1/chat/completions", content=b"x" * (2 << 20), headers=auth)
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "request_too_large"
    assert "x-odock-request-id" not in declared.headers


async def test_refused_before_auth_has_no_record_but_a_log_line_with_the_client_id(
    gateway: str, dp: DataPlaneProcess
) -> None:
    resp = await _chat(gateway, "odk-not-a-real-key", [(b"x-request-id", b"audit-unauth-7")])
    assert resp.status_code == 401 and "x-odock-request-id" not in resp.headers
    assert resp.headers["x-request-id"] == "audit-unauth-7"
    deadline = time.monotonic() + 10
    while "audit-unauth-7" not in dp.stderr_text():
        assert time.monotonic() < deadline, "no request log line names the client's id"
        await asyncio.sleep(0.1)
    (line,) = [ln for ln in dp.stderr_text().splitlines() if "audit-unauth-7" in ln]
    assert "401" in line and "client_request_id" in line and "odk-not-a-real-key" not in line


def _rv_config(org: str, model_url: str, **web: Any) -> dict[str, Any]:
    return {"orgs": [{
        "name": org,
        "credentials": [{"name": "openai", "family": "openai", "secret_env": "T_AUDIT_RV_KEY"}],
        "models": [{"name": "gpt", "credential": "openai", "base_url": model_url}],
        "keys": [{"name": "web", "models": ["gpt"], **web}, {"name": "batch", "all_models": True}],
    }]}  # fmt: skip


def _apply(ctl: Ctl, tmp_path: Path, data: dict[str, Any], *extra: str) -> Result:
    path = tmp_path / f"gw-{os.urandom(3).hex()}.json"  # YAML is a superset of JSON
    path.write_text(json.dumps(data))
    return ctl.run("apply", "-f", str(path), *extra)


def test_apply_revokes_and_changes_a_model_in_one_run_and_dry_run_json_says_so(
    cp: ControlPlaneProcess, tmp_path: Path
) -> None:
    ctl = Ctl(cp.address, cp.admin_token, {"T_AUDIT_RV_KEY": "sk-test-audit-rv-0001"})
    org = "audit-rv-" + os.urandom(3).hex()
    assert _apply(ctl, tmp_path, _rv_config(org, "https://api.openai.com/v1")).code == 0
    both = _rv_config(org, "https://eu.api.openai.com/v1", revoked=True)

    planned = _apply(ctl, tmp_path, both, "--dry-run", "--json")
    assert planned.code == 0, planned.err
    actions = {r["name"]: r["action"] for r in planned.json()["resources"]}
    assert actions[f"{org}/web"] == "revoked" and actions[f"{org}/gpt"] == "changed", actions
    keys = {k["name"]: k for k in ctl.json("key", "list", org, "--include-revoked", "--json")["keys"]}
    assert not keys["web"].get("revoked")  # a dry run changes nothing

    applied = _apply(ctl, tmp_path, both, "--json")
    assert applied.code == 0, applied.err
    actions = {r["name"]: r["action"] for r in applied.json()["resources"]}
    assert actions[f"{org}/web"] == "revoked" and actions[f"{org}/gpt"] == "changed", actions
    keys = {k["name"]: k for k in ctl.json("key", "list", org, "--include-revoked", "--json")["keys"]}
    assert keys["web"]["revoked"] is True and not keys["batch"].get("revoked")
    models = ctl.json("model", "list", org, "--json")["models"]
    assert [m["base_url"] for m in models] == ["https://eu.api.openai.com/v1"]

    again = _apply(ctl, tmp_path, both, "--dry-run", "--json")  # an already revoked key: unchanged
    actions = {r["name"]: r["action"] for r in again.json()["resources"]}
    assert again.code == 0 and set(actions.values()) == {"unchanged"}, actions

    # The original file (web active) against the revoked key: reported, exit 0, the rest applied.
    back = _apply(ctl, tmp_path, _rv_config(org, "https://api.openai.com/v1"), "--json")
    assert back.code == 0, back.err
    actions = {r["name"]: r["action"] for r in back.json()["resources"]}
    assert actions[f"{org}/web"] == "revoked elsewhere" and actions[f"{org}/gpt"] == "changed", actions


def test_an_org_admin_cannot_list_another_orgs_usage(cp: ControlPlaneProcess) -> None:
    ctl = Ctl(cp.address, cp.admin_token)
    mine, theirs = ("audit-oa-" + os.urandom(3).hex() for _ in range(2))
    ctl.ok("org", "create", mine)
    ctl.ok("org", "create", theirs)
    secret = ctl.json("token", "create", mine, "ops", "--json")["secret"]
    as_admin = Ctl(cp.address, secret)
    assert as_admin.json("usage", "list", mine, "--json")["records"] == []
    assert_one_line_error(as_admin.run("usage", "list", theirs), 1, "PERMISSION_DENIED")
    assert_one_line_error(as_admin.run("usage", "list"), 1)  # must name its org


def _raw_request(gateway: str, key: str, extra_header_lines: bytes) -> bytes:
    host, port = gateway.removeprefix("http://").rsplit(":", 1)
    body = json.dumps(CHAT).encode()
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nAuthorization: Bearer " + key.encode() + b"\r\n"
            + extra_header_lines + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")  # fmt: skip
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(head + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("lines", [
    b"X-Request-Id: abc\r\n def\r\n",  # obsolete line folding
    b"X-Request-Id: abc\rdef\r\n",  # a bare CR
    b"X-Request-Id: abc\x00def\r\n",
    b"X-Request-Id: abc\tdef\r\n",
])  # fmt: skip
async def test_crlf_and_control_characters_in_the_client_id_are_never_echoed_or_stored(
    gateway: str, cp: ControlPlaneProcess, dp: DataPlaneProcess, org: Provisioned, lines: bytes
) -> None:
    raw = await asyncio.to_thread(_raw_request, gateway, org.key, lines)
    head, _, _ = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n")[1:])
    }
    # Never the client's value (nor part of it): a fresh gateway id. ("def" alone would also match
    # a fresh id's hex digits now and then.)
    assert re.fullmatch(rb"req_[0-9a-f]{24}", headers.get(b"x-request-id", b"")), head
    if status == 200:
        rid = headers[b"x-odock-request-id"].decode()
        assert headers[b"x-request-id"].decode() == rid
        assert await _record_client_id(cp, rid) == ""
    else:
        assert status == 400, head


async def test_the_log_line_carries_exactly_the_stored_client_id(
    gateway: str, cp: ControlPlaneProcess, dp: DataPlaneProcess, org: Provisioned
) -> None:
    long_ok, too_long = "L" * 127 + "k", "M" * 129
    ok = await _chat(gateway, org.key, [(b"x-request-id", long_ok.encode())])
    bad = await _chat(gateway, org.key, [(b"x-request-id", too_long.encode())])
    assert await _record_client_id(cp, ok.headers["x-odock-request-id"]) == long_ok
    assert await _record_client_id(cp, bad.headers["x-odock-request-id"]) == ""
    deadline = time.monotonic() + 10
    while bad.headers["x-odock-request-id"] not in dp.stderr_text():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    log = dp.stderr_text().splitlines()
    (line,) = [ln for ln in log if ok.headers["x-odock-request-id"] in ln]
    assert long_ok in line and "client_request_id" in line
    (line,) = [ln for ln in log if bad.headers["x-odock-request-id"] in ln]
    assert "client_request_id" not in line and "MMMM" not in line


@pytest.mark.parametrize(
    "args",
    [
        ("usage", "list", "--since", "99999999h"),
        ("usage", "list", "--until", "3000000d"),
        ("usage", "totals", "--since", "99999999h"),
    ],
)
async def test_a_duration_reaching_before_year_1_is_a_one_line_usage_error(
    ctl: Ctl, args: tuple[str, ...]
) -> None:
    # Was: exit 1, "internal error: OverflowError: date value out of range".
    line = assert_one_line_error(await _ctl(ctl, *args), 2, args[2])
    assert "internal error" not in line


async def test_a_long_unknown_key_or_org_name_is_not_echoed_at_length(ctl: Ctl, org: Provisioned) -> None:
    long = "x" * 5000
    for args in (
        ("usage", "list", org.org.name, "--key", long),
        ("usage", "list", long),
        ("key", "get", long, "k"),
    ):
        line = assert_one_line_error(await _ctl(ctl, *args), 1, "NOT_FOUND")
        assert len(line) < 300, len(line)
