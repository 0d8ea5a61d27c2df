"""The request line's routing fields: ``deployment`` and ``attempts``, written like the others
(what the plane's ``logging`` formatter writes, escaped, only when set)."""

from __future__ import annotations

import io
import json

import pytest

from data_plane.logs import RequestFields
from tests.data_plane.test_request_log import fields, reference, restore_logging, without_time, writer

__all__ = ["restore_logging"]

ROUTED = [
    fields(deployment="east-1", attempts=1),
    fields(deployment="west", attempts=3, status=502, outcome="error", error_code="upstream_unreachable"),
    fields(deployment='odd "name"\\ \u2028', attempts=2, client_request_id="c-1"),
]


# Text lines escape controls the formatter would write raw (one line per request): printable names only.
@pytest.mark.parametrize(("fmt", "f"), [("json", f) for f in ROUTED] + [("text", f) for f in ROUTED[:2]])
def test_routing_fields_are_what_the_formatter_writes(fmt: str, f: RequestFields, restore_logging: None) -> None:
    out = io.StringIO()
    writer(fmt, out).write(f)
    line = out.getvalue()
    assert without_time(line) == without_time(reference(fmt, f))
    assert line.count("\n") == 1
    if fmt == "json":
        parsed = json.loads(line)
        assert (parsed["deployment"], parsed["attempts"]) == (f.deployment, f.attempts)


def test_routing_fields_are_left_out_when_unset(restore_logging: None) -> None:
    out = io.StringIO()
    writer("json", out).write(fields())
    parsed = json.loads(out.getvalue())
    assert "deployment" not in parsed and "attempts" not in parsed


def test_a_text_line_stays_one_line_whatever_the_deployment_name(restore_logging: None) -> None:
    out = io.StringIO()
    writer("text", out).write(fields(deployment="a\nb\u2028c", attempts=2))
    line = out.getvalue()
    assert line.count("\n") == 1 and "deployment=a\\nb\\u2028c attempts=2" in line
