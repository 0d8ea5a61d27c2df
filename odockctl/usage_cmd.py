"""odockctl usage totals|list|get: usage totals by time bucket, org, key and model; records by filter
(client request id, time range...); one request's record."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp

from odock.v1 import common_pb2, node_pb2, usage_pb2, usage_pb2_grpc
from odockctl.client import Client
from odockctl.commands.common import add_command, add_group
from odockctl.commands.keys import find_key
from odockctl.context import Context, parsed
from odockctl.errors import RemoteError, UsageError
from odockctl.output import timestamp_text, to_dict
from odockctl.values import ValueProblem, family_name, parse_duration_ms, parse_timestamp

_ORG_ID_RE = re.compile(r"org_[a-z2-7]{26}")
_KEY_ID_RE = re.compile(r"key_[a-z2-7]{26}")
PICOS_PER_USD = 10**12
MAX_PAGES = 10_000
PAGE_SIZE = 1000
BUCKETS = {"hour": usage_pb2.USAGE_BUCKET_HOUR, "day": usage_pb2.USAGE_BUCKET_DAY,
           "total": usage_pb2.USAGE_BUCKET_TOTAL}  # fmt: skip
DIMENSIONS = {"org": usage_pb2.USAGE_DIMENSION_ORG, "key": usage_pb2.USAGE_DIMENSION_KEY,
              "model": usage_pb2.USAGE_DIMENSION_MODEL}  # fmt: skip
FLAG_NAMES = ((1, "malformed usage"), (2, "duplicate usage"), (4, "tokens clamped"), (8, "cost saturated"),
              (16, "meter failed"))  # fmt: skip
LIST_PAGE_SIZE = 50
MAX_LIST_PAGE_SIZE = 1000
_INT64_FIELDS = frozenset(
    f.name for f in node_pb2.UsageRecord.DESCRIPTOR.fields
    if f.type in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64)
)  # fmt: skip


def cost_text(picos: int) -> str:
    """Pico-USD as an exact dollar amount: $0.00015, $12.50."""
    text = f"{Decimal(picos) / PICOS_PER_USD:.12f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


def seconds_text(milliseconds: int) -> str:
    """Milliseconds of audio as exact seconds: 61.5, 0.001, 12."""
    whole, frac = divmod(milliseconds, 1000)
    return f"{whole}.{frac:03d}".rstrip("0").rstrip(".")


def _unit_columns(rows: Sequence[Any]) -> list[tuple[str, str]]:
    """(header, field) of the units other than tokens that some row has (issue 15): shown only then."""
    return [(header, name) for header, name in (("AUDIO S", "audio_milliseconds"), ("CHARS", "input_characters"))
            if any(getattr(r, name) for r in rows)]  # fmt: skip


def _unit_cells(row: Any, columns: list[tuple[str, str]]) -> list[str]:
    return [seconds_text(row.audio_milliseconds) if name == "audio_milliseconds" else str(getattr(row, name))
            for _, name in columns]  # fmt: skip


def outcome_name(value: int) -> str:
    """complete / partial / cancelled / error / unspecified."""
    try:
        return common_pb2.Outcome.Name(value).removeprefix("OUTCOME_").lower()  # type: ignore[arg-type]
    except ValueError:
        return str(value)


def flags_text(flags: int) -> str:
    """The record's flag bits by name, or 'none'."""
    names = [name for bit, name in FLAG_NAMES if flags & bit]
    rest = flags & ~sum(bit for bit, _ in FLAG_NAMES)
    if rest:
        names.append(f"0x{rest:x}")
    return ", ".join(names) or "none"


def parse_when(text: str, now: datetime) -> datetime:
    """A duration back from now (24h, 7d) or an RFC 3339 timestamp / date."""
    try:
        return now - timedelta(milliseconds=parse_duration_ms(text))
    except ValueProblem:
        pass
    except OverflowError:  # a duration reaching before year 1
        raise ValueProblem(f"too far back (before year 1): {text!r}") from None
    try:
        return parse_timestamp(text)
    except ValueProblem:
        raise ValueProblem(
            f"expected a duration back from now (24h, 7d) or an RFC 3339 time: {text!r}"
        ) from None


def _timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def _org_ref(client: Client, ref: str | None) -> str:
    # Ids pass through unchecked: usage of a deleted org stays queryable.
    if not ref:
        return ""
    return ref if _ORG_ID_RE.fullmatch(ref) else client.org_id(ref)


def _key_ref(client: Client, org_id: str, ref: str | None) -> str:
    if not ref or _KEY_ID_RE.fullmatch(ref):
        return ref or ""
    if not org_id:
        raise UsageError("--key: give the org to look a key up by name, or pass the key id")
    return find_key(client, org_id, ref).id


def _bucket_text(bucket: int, ts: Timestamp, response: usage_pb2.GetUsageTotalsResponse) -> str:
    if bucket == usage_pb2.USAGE_BUCKET_TOTAL:
        return f"{timestamp_text(response.start_time)}..{timestamp_text(response.end_time)}"
    when = ts.ToDatetime(tzinfo=UTC)
    return (
        when.strftime("%Y-%m-%d")
        if bucket == usage_pb2.USAGE_BUCKET_DAY
        else when.strftime("%Y-%m-%dT%H:00Z")
    )


def totals(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.client()
    now = datetime.now(UTC)
    since = parsed(args.since, lambda t: parse_when(t, now), "--since")
    until = parsed(args.until, lambda t: parse_when(t, now), "--until") if args.until else now
    org_id = _org_ref(client, args.org)
    request = usage_pb2.GetUsageTotalsRequest(
        org_id=org_id, key_id=_key_ref(client, org_id, args.key), model_name=args.model or "",
        start_time=_timestamp(since), end_time=_timestamp(until), bucket=BUCKETS[args.bucket],
        group_by=[DIMENSIONS[d] for d in args.by], page_size=PAGE_SIZE,
    )  # fmt: skip
    stub = usage_pb2_grpc.UsageServiceStub(client.channel)
    combined = usage_pb2.GetUsageTotalsResponse()
    for _ in range(MAX_PAGES):
        page: usage_pb2.GetUsageTotalsResponse = client.call(stub.GetUsageTotals, request)
        combined.start_time.CopyFrom(page.start_time)
        combined.end_time.CopyFrom(page.end_time)
        combined.totals.extend(page.totals)
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    else:
        raise RemoteError("usage totals did not terminate (page token never became empty)")
    if ctx.out.as_json:
        ctx.out.json(to_dict(combined))
        return
    dims = [d for d in DIMENSIONS if d in args.by]
    units = _unit_columns(combined.totals)
    headers = ["BUCKET", *(d.upper() for d in dims), "REQUESTS", "COMPLETE", "PARTIAL", "CANCELLED", "ERROR",
               "INPUT", "OUTPUT", "CACHED", "REASONING", *(h for h, _ in units), "COST"]  # fmt: skip
    rows = []
    for t in combined.totals:
        o = t.outcomes
        by_dim = {"org": t.org_id, "key": t.key_id, "model": t.model_name}
        rows.append([_bucket_text(request.bucket, t.start_time, combined), *(by_dim[d] or "-" for d in dims),
                     *(str(n) for n in (t.requests, o.complete, o.partial, o.cancelled, o.error, t.input_tokens,
                                        t.output_tokens, t.cached_input_tokens, t.reasoning_tokens)),
                     *_unit_cells(t, units), cost_text(t.cost_picos)])  # fmt: skip
    ctx.out.table(headers, rows)


def get(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.client()
    stub = usage_pb2_grpc.UsageServiceStub(client.channel)
    request = usage_pb2.GetUsageRecordRequest(request_id=args.request_id, org_id=_org_ref(client, args.org))
    response: usage_pb2.GetUsageRecordResponse = client.call(stub.GetUsageRecord, request)
    r = response.record
    pairs = [
        ("request id", r.request_id), ("attempt", str(r.attempt)), ("node", r.node_id or "-"),
        ("org id", r.org_id), ("key id", r.key_id or "-"), ("model", r.model_name or "-"),
        ("upstream slug", r.upstream_slug or "-"), ("family", family_name(r.family)),
        ("endpoint", r.endpoint or "-"), ("http status", str(r.http_status)), ("outcome", outcome_name(r.outcome)),
        ("streamed", "yes" if r.streamed else "no"),
        ("tokens", (f"input={r.input_tokens} output={r.output_tokens} cached_input={r.cached_input_tokens} "
                   f"reasoning={r.reasoning_tokens}")),
        ("cost", cost_text(r.cost_picos)), ("latency", f"{r.latency_us / 1000:.1f}ms"),
        ("upstream latency", f"{r.upstream_latency_us / 1000:.1f}ms"),
        ("first byte", f"{r.time_to_first_byte_us / 1000:.1f}ms" if r.streamed else "-"),
        ("time", timestamp_text(r.time)), ("received", timestamp_text(response.receive_time)),
        ("client request id", r.client_request_id or "-"), ("error code", r.error_code or "-"),
        ("flags", flags_text(r.flags)),
    ]  # fmt: skip
    units = [("audio", f"{seconds_text(r.audio_milliseconds)}s" if r.audio_milliseconds else ""),
             ("characters", str(r.input_characters) if r.input_characters else ""), ("batch id", r.batch_id)]
    at = [name for name, _ in pairs].index("cost")
    pairs[at:at] = [(name, value) for name, value in units if value]  # fmt: skip
    ctx.out.message(response, pairs)


def record_dict(record: node_pb2.UsageRecord) -> dict[str, Any]:
    """A record as JSON-ready data: every field present (zero values too), counters as numbers."""
    data = MessageToDict(record, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    for name in _INT64_FIELDS:  # proto3 JSON writes 64-bit integers as strings
        data[name] = int(data[name])
    return data


def _page_size(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_LIST_PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"expected a number from 1 to {MAX_LIST_PAGE_SIZE}: {text!r}")
    return size


def list_records(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.client()
    now = datetime.now(UTC)
    if args.org and args.org_option and args.org != args.org_option:
        raise UsageError("give the org once (as an argument or with --org)")
    org_id = _org_ref(client, args.org or args.org_option)
    request = usage_pb2.ListUsageRecordsRequest(
        org_id=org_id, key_id=_key_ref(client, org_id, args.key), model_name=args.model or "",
        client_request_id=args.client_request_id or "", request_id=args.request_id or "",
        page_size=args.limit, page_token=args.page_token or "",
    )  # fmt: skip
    if args.since:
        request.start_time.CopyFrom(_timestamp(parsed(args.since, lambda t: parse_when(t, now), "--since")))
    if args.until:
        request.end_time.CopyFrom(_timestamp(parsed(args.until, lambda t: parse_when(t, now), "--until")))
    stub = usage_pb2_grpc.UsageServiceStub(client.channel)
    page: usage_pb2.ListUsageRecordsResponse = client.call(stub.ListUsageRecords, request)
    if ctx.out.as_json:
        ctx.out.json(
            {"records": [record_dict(r) for r in page.records], "next_page_token": page.next_page_token}
        )
        return
    units = _unit_columns(page.records)
    headers = ["TIME", "REQUEST ID", "CLIENT REQUEST ID", "ORG", "KEY", "MODEL", "ENDPOINT", "STATUS", "OUTCOME",
               "ERROR", "INPUT", "OUTPUT", *(h for h, _ in units), "COST", "FLAGS"]  # fmt: skip
    rows = [[timestamp_text(r.time), r.request_id, r.client_request_id or "-", r.org_id, r.key_id or "-",
             r.model_name or "-", r.endpoint or "-", str(r.http_status), outcome_name(r.outcome),
             r.error_code or "-", str(r.input_tokens), str(r.output_tokens), *_unit_cells(r, units),
             cost_text(r.cost_picos), flags_text(r.flags)] for r in page.records]  # fmt: skip
    ctx.out.table(headers, rows)
    if page.next_page_token:
        ctx.out.line(f"more: --page-token {page.next_page_token}")


def _dimensions(text: str) -> list[str]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in DIMENSIONS]
    if unknown:
        raise UsageError(f"--by: unknown dimension {unknown[0]!r} (expected org, key, model)")
    return names


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the usage command group."""
    group = add_group(sub, common, "usage", "usage totals and per-request records")
    p = add_command(group, common, "totals", "requests by outcome, tokens and cost per time bucket", totals)
    p.add_argument(
        "org", nargs="?", help="org name or id (required with an org admin token; default: every org)"
    )
    p.add_argument(
        "--since",
        default="24h",
        metavar="WHEN",
        help="start: a duration back from now (24h, 7d) or an RFC 3339 time (default 24h)",
    )
    p.add_argument("--until", metavar="WHEN", help="end (exclusive), same forms as --since (default now)")
    p.add_argument("--bucket", choices=sorted(BUCKETS), default="day", help="time bucket (UTC; default day)")
    p.add_argument(
        "--by",
        type=_dimensions,
        default=[],
        metavar="DIM[,DIM]",
        help="also break down by org, key and/or model, e.g. --by key,model",
    )
    p.add_argument("--key", metavar="KEY", help="only this virtual key (id, or name with the org)")
    p.add_argument("--model", metavar="NAME", help="only this model name")
    p = add_command(group, common, "list", "usage records by filter, newest first (one page)", list_records)
    p.add_argument(
        "org", nargs="?", help="org name or id (required with an org admin token; default: every org)"
    )
    p.add_argument("--org", dest="org_option", metavar="ORG", help="the org, as an option")
    p.add_argument("--key", metavar="KEY", help="only this virtual key (id, or name with the org)")
    p.add_argument("--model", metavar="NAME", help="only this model name")
    p.add_argument(
        "--since", metavar="WHEN", help="records from: a duration back from now (24h) or RFC 3339 time"
    )
    p.add_argument("--until", metavar="WHEN", help="records before (exclusive), same forms as --since")
    p.add_argument("--client-request-id", metavar="ID", help="the client's x-request-id")
    p.add_argument("--request-id", metavar="ID", help="the gateway's request id (x-odock-request-id)")
    p.add_argument(
        "--limit", type=_page_size, default=LIST_PAGE_SIZE, metavar="N", help="records per page (default 50)"
    )
    p.add_argument("--page-token", metavar="TOKEN", help="continue a listing (the token a page ended with)")
    p = add_command(group, common, "get", "show the stored usage record of one request", get)
    p.add_argument("request_id", help="the request id (as logged by the data plane)")
    p.add_argument("--org", help="org name or id (required with an org admin token)")
