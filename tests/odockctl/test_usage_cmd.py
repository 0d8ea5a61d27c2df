"""odockctl usage totals|get against the usage-only server. The command group is
mounted on a parser built like odockctl's own (the lead wires it into
odockctl.main); the synchronous client runs in a worker thread."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import timedelta

import pytest

from control_plane import ids
from control_plane.usage import ingest_batch
from odock.v1 import common_pb2
from odockctl import main as cli_main
from odockctl import usage_cmd
from odockctl.context import Context
from odockctl.errors import CliError
from odockctl.output import Output
from odockctl.settings import CliSettings
from tests.control_plane.usage.env import T0, UsageEnv, batch, record


def odockctl_usage(argv: list[str], environ: dict[str, str]) -> tuple[int, str, str]:
    """Like cli_main.run, with only the usage command group."""
    out, err = io.StringIO(), io.StringIO()
    common = cli_main.Parser(add_help=False)
    cli_main._global_flags(common, suppress=True)
    parser = cli_main.Parser(prog="odockctl")
    cli_main._global_flags(parser, suppress=False)
    usage_cmd.register(parser.add_subparsers(dest="command", required=True), common)
    ctx = None
    try:
        args = parser.parse_args(argv)
        ctx = Context(args=args, out=Output(out, args.json), err=err, stdin=io.StringIO(), environ=environ,
                      settings=CliSettings.from_env(environ))  # fmt: skip
        args.handler(ctx, args)
        code = 0
    except CliError as exc:
        err.write(f"odockctl: error: {exc.message}\n")
        code = exc.exit_code
    finally:
        if ctx is not None:
            ctx.close()
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
async def org(env: UsageEnv) -> str:
    org_id = ids.new_id(ids.ORG)
    records = [
        record(
            org_id,
            request_id=f"cli-{i}",
            when=T0 + timedelta(hours=i * 7),
            key_id=f"key_{i % 2}",
            model="gpt" if i % 3 else "claude",
            input_tokens=100 + i,
            output_tokens=10,
            cost_picos=150_000_000,
            outcome=common_pb2.OUTCOME_ERROR if i == 4 else common_pb2.OUTCOME_COMPLETE,
        )
        for i in range(8)
    ]
    await ingest_batch(env.sessions, batch(records))
    return org_id


async def ctl(env: UsageEnv, *argv: str) -> tuple[int, str, str]:
    environ = {"ODOCK_CP_ADDRESS": env.address, "ODOCK_ADMIN_TOKEN": env.secrets.admin_token}
    return await asyncio.to_thread(odockctl_usage, list(argv), environ)


async def test_totals_table_by_day_key_and_model(env: UsageEnv, org: str) -> None:
    since = (T0 - timedelta(hours=1)).isoformat()
    code, out, err = await ctl(env, "usage", "totals", org, "--since", since, "--until", "2026-03-04", "--by",
                               "key,model")  # fmt: skip
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["BUCKET", "KEY", "MODEL", "REQUESTS", "COMPLETE", "PARTIAL", "CANCELLED", "ERROR",
                                "INPUT", "OUTPUT", "CACHED", "REASONING", "COST"]  # fmt: skip
    # Records every 7h from T0: day 1 has i=0..3, day 2 i=4..6, day 3 i=7.
    first = lines[1].split()
    assert first[:4] == ["2026-03-01", "key_0", "claude", "1"] and first[-1] == "$0.00015"
    assert sum(int(line.split()[3]) for line in lines[1:]) == 8
    assert sum(int(line.split()[7]) for line in lines[1:]) == 1


async def test_totals_json_and_total_bucket(env: UsageEnv, org: str) -> None:
    code, out, _ = await ctl(env, "usage", "totals", org, "--since", "2026-02-28", "--until", "2026-03-05",
                             "--bucket", "total", "--json")  # fmt: skip
    assert code == 0
    data = json.loads(out)
    [total] = data["totals"]
    assert int(total["requests"]) == 8 and int(total["input_tokens"]) == sum(100 + i for i in range(8))
    assert int(total["cost_picos"]) == 8 * 150_000_000 and total["outcomes"] == {
        "complete": "7",
        "error": "1",
    }
    assert data["start_time"] == "2026-02-28T00:00:00Z"


async def test_get_shows_one_record(env: UsageEnv, org: str) -> None:
    code, out, _ = await ctl(env, "usage", "get", "cli-4")
    assert code == 0
    fields = dict(line.split(": ", 1) for line in out.splitlines())
    assert fields["request id"].strip() == "cli-4" and fields["outcome"].strip() == "error"
    assert fields["tokens"].strip() == "input=104 output=10 cached_input=0 reasoning=0"
    assert fields["cost"].strip() == "$0.00015" and fields["org id"].strip() == org
    code, out, _ = await ctl(env, "usage", "get", "cli-4", "--org", org, "--json")
    assert code == 0 and json.loads(out)["record"]["request_id"] == "cli-4"


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["usage", "get", "cli-none"], 1, "NOT_FOUND: no usage record for request 'cli-none'"),
        (["usage", "totals", "--since", "yesterday"], 2, "--since: expected a duration back from now"),
        (["usage", "totals", "--by", "team"], 2, "--by: unknown dimension 'team'"),
        (["usage", "totals", "--key", "frontend"], 2, "--key: give the org"),
        (
            ["usage", "totals", "--since", "1h", "--until", "2h"],
            1,
            "INVALID_ARGUMENT: end_time: must be after",
        ),
    ],
)
async def test_errors_are_one_line(env: UsageEnv, argv: list[str], code: int, needle: str) -> None:
    got, out, err = await ctl(env, *argv)
    assert (got, out) == (code, "")
    assert len(err.splitlines()) == 1 and err.startswith("odockctl: error: ") and needle in err, err


def test_cost_text_is_exact() -> None:
    assert usage_cmd.cost_text(0) == "$0.00"
    assert usage_cmd.cost_text(150_000_000) == "$0.00015"
    assert usage_cmd.cost_text(12_500_000_000_000) == "$12.50"
    assert usage_cmd.cost_text(1) == "$0.000000000001"
