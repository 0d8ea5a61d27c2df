"""``odockctl usage list`` as a subprocess against a real control plane (records reported over
NodeService.ReportUsage with the node token): filters, the table, --json with numbers as numbers
and zero values present, paging with --page-token, one-line errors; and an absurd model price
refused with a one-line message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from odock.v1 import common_pb2, node_pb2, node_pb2_grpc
from tests.odockctl.runner import Ctl, assert_one_line_error
from tests.support.planes import ControlPlaneProcess

T0 = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
KEY_ID = "key_" + "a" * 26


def _record(org_id: str, i: int, **extra: Any) -> node_pb2.UsageRecord:
    fields: dict[str, Any] = {
        "request_id": f"req_list_{org_id[-4:]}_{i:02d}", "node_id": "node-1", "org_id": org_id, "key_id": KEY_ID,
        "model_name": "gpt", "endpoint": "/v1/chat/completions", "http_status": 200,
        "family": common_pb2.PROVIDER_FAMILY_OPENAI, "outcome": common_pb2.OUTCOME_COMPLETE,
        "input_tokens": 10 + i, "output_tokens": 5, "cost_picos": 1_000_000 * (i + 1),
    }  # fmt: skip
    rec = node_pb2.UsageRecord(**{**fields, **extra})
    rec.time.FromDatetime(T0 + timedelta(minutes=i))
    return rec


def _report(cp: ControlPlaneProcess, records: list[node_pb2.UsageRecord]) -> None:
    with grpc.insecure_channel(cp.address) as channel:
        acks = list(node_pb2_grpc.NodeServiceStub(channel).ReportUsage(
            iter([node_pb2.UsageBatch(node_id="node-1", sequence=1, records=records)]),
            metadata=(("authorization", f"Bearer {cp.node_token}"),), timeout=30,
        ))  # fmt: skip
    assert [a.accepted for a in acks] == [len(records)]


@pytest.fixture(scope="module")
def org_id(module_cp: ControlPlaneProcess) -> str:
    ctl = Ctl(module_cp.address, module_cp.admin_token)
    org: str = ctl.json("org", "create", "usage-list")["id"]
    _report(module_cp, [
        *(_record(org, i) for i in range(5)),
        _record(org, 5, client_request_id="my-id", http_status=429, outcome=common_pb2.OUTCOME_ERROR,
                error_code="rate_limit_exceeded", input_tokens=0, output_tokens=0, cost_picos=0),
    ])  # fmt: skip
    return org


def test_json_finds_the_client_request_id_with_numbers_and_zero_values(ctl: Ctl, org_id: str) -> None:
    data = ctl.json("usage", "list", "usage-list", "--client-request-id", "my-id")
    assert data["next_page_token"] == ""
    (rec,) = data["records"]
    assert rec["request_id"].endswith("_05") and rec["client_request_id"] == "my-id"
    assert rec["error_code"] == "rate_limit_exceeded" and rec["http_status"] == 429
    assert rec["outcome"] == "OUTCOME_ERROR" and rec["time"] == "2026-05-04T12:05:00Z"
    for name in ("input_tokens", "output_tokens", "cost_picos", "cached_input_tokens", "latency_us", "flags"):
        assert rec[name] == 0, name  # present, and a number
    assert rec["streamed"] is False and rec["upstream_slug"] == ""


def test_table_newest_first(ctl: Ctl, org_id: str) -> None:
    lines = ctl.ok("usage", "list", "--org", "usage-list", "--key", KEY_ID, "--model", "gpt").lines()
    assert lines[0].split()[:4] == ["TIME", "REQUEST", "ID", "CLIENT"]
    assert [line.split()[1][-2:] for line in lines[1:]] == ["05", "04", "03", "02", "01", "00"]
    newest = lines[1].split()
    assert newest[2] == "my-id" and "rate_limit_exceeded" in newest and "error" in newest
    assert lines[2].split()[2] == "-" and "$0.000005" in lines[2]


def test_pages_with_the_page_token(ctl: Ctl, org_id: str) -> None:
    seen: list[str] = []
    token = ""
    for _ in range(10):
        args = ["usage", "list", org_id, "--limit", "4", "--since", "2026-05-04T12:01:00Z"]
        data = ctl.json(*args, *(["--page-token", token] if token else []))
        seen += [r["request_id"][-2:] for r in data["records"]]
        token = data["next_page_token"]
        if not token:
            break
    assert seen == ["05", "04", "03", "02", "01"]
    human = ctl.ok("usage", "list", org_id, "--limit", "2").lines()
    assert human[-1].startswith("more: --page-token ")


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--limit", "0"], 2, "--limit"),
        (["--since", "yesterday"], 2, "--since"),
        (["--client-request-id", "x" * 129], 1, "client_request_id"),
        (["--page-token", "garbage"], 1, "page_token"),
    ],
)
def test_errors_are_one_line(ctl: Ctl, org_id: str, args: list[str], code: int, needle: str) -> None:
    assert_one_line_error(ctl.run("usage", "list", *args), code, needle)


def test_an_absurd_price_is_refused_with_one_line(ctl: Ctl) -> None:
    ctl.ok("org", "create", "prices")
    ctl.ok("credential", "create", "prices", "openai", "--family", "openai", stdin="sk-test-price-0001\n")
    base = ["model", "create", "prices", "gpt", "--family", "openai", "--slug", "gpt-4.1",
            "--base-url", "http://127.0.0.1:9/v1", "--credential", "openai"]  # fmt: skip
    line = assert_one_line_error(ctl.run(*base, "--output-price", "1000000.01"), 1, "output_per_mtok_micros")
    assert "at most" in line and "$1,000,000" in line
    ctl.ok(*base, "--output-price", "1000000", "--input-price", "75")  # the bound itself is a price
    assert_one_line_error(ctl.run("model", "update", "prices", "gpt", "--input-price", "5000000"), 1, "input")
