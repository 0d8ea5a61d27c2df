"""The request-line writer: the same lines ``logging`` would write, redacted, whole and in order,
written together within ``FLUSH_SECONDS`` and never lost at exit; nothing at ``ODOCK_LOG_LEVEL=warning``."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from data_plane import logs
from data_plane.logs import FLUSH_CHARS, FLUSH_SECONDS, REQUEST_LOGGER, RequestFields, RequestLog
from odock.envconfig import LogSettings
from odock.logfmt import REDACTED, JsonFormatter, TextFormatter

CANARY = "node-" + "Zq9" * 12  # registered as a secret, like the node token


def fields(n: int = 0, **changes: object) -> RequestFields:
    base = RequestFields(
        f"req_{n:024x}", "node-1", "org_1", "key_1", "gpt-chat", "openai", "/v1/chat/completions", "POST",
        200, "complete", False, 12.345, 0.407, 10.5, 12, 34, 0,
    )  # fmt: skip
    return base._replace(**changes)  # type: ignore[arg-type]


ODD_FIELDS = [
    fields(),
    fields(upstream_first_byte_ms=None, status=401, outcome="error", error_code="invalid_api_key", org_id=""),
    fields(model='quo"te\\back', streamed=True, latency_ms=1e-05, overhead_ms=0.0),
    fields(model="déjà-vu-模型", input_tokens=10**9, cached_input_tokens=7),
    fields(model="tab\there\nnew\x7fline\u2028sep"),
    fields(client_request_id="client-id.42:a_b"),
    fields(status=429, outcome="error", error_code="rate_limit_exceeded", client_request_id="c" * 128),
]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    logs._REQUEST_LOG = None


def writer(fmt: str, stream: io.StringIO) -> RequestLog:
    setup = logs.configure(LogSettings(format=fmt, level="info"), stream)
    setup.redact([CANARY])
    got = logs.request_log()
    assert got is not None
    return got


def reference(fmt: str, f: RequestFields) -> str:
    """What ``logging`` with the plane's formatter writes for the same fields."""
    formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    formatter.add_secrets([CANARY])
    record = logging.LogRecord(REQUEST_LOGGER, logging.INFO, __file__, 1, f.message(), (), None)
    record.__dict__.update(f.extra())
    return formatter.format(record) + "\n"


def without_time(line: str) -> str:
    return re.sub(r'^(\{"time": ")?\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z', "TIME", line)


@pytest.mark.parametrize("f", ODD_FIELDS)
def test_json_lines_are_what_the_json_formatter_writes(f: RequestFields, restore_logging: None) -> None:
    out = io.StringIO()
    writer("json", out).write(f)
    line = out.getvalue()
    assert without_time(line) == without_time(reference("json", f))
    parsed = json.loads(line)
    assert parsed["model"] == f.model and parsed["upstream_first_byte_ms"] == f.upstream_first_byte_ms
    assert ("error_code" in parsed) == bool(f.error_code)


@pytest.mark.parametrize("f", ODD_FIELDS[:4])
def test_text_lines_are_what_the_text_formatter_writes(f: RequestFields, restore_logging: None) -> None:
    out = io.StringIO()
    writer("text", out).write(f)
    assert without_time(out.getvalue()) == without_time(reference("text", f))


def test_a_text_line_stays_one_line_whatever_the_model_name(restore_logging: None) -> None:
    out = io.StringIO()
    writer("text", out).write(fields(model="evil\nfake INFO line\r\x1b[2J"))
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n") and "\r" not in text and "\x1b" not in text
    assert "model=evil\\nfake" in text


@pytest.mark.parametrize("fmt", ["json", "text"])
@pytest.mark.parametrize("model", [CANARY, f"x{CANARY}y", f'"{CANARY}\\', f"\n{CANARY}"])
def test_a_secret_in_the_model_name_is_redacted(fmt: str, model: str, restore_logging: None) -> None:
    out = io.StringIO()
    writer(fmt, out).write(fields(model=model))
    text = out.getvalue()
    assert CANARY not in text and REDACTED in text
    if fmt == "json":
        assert REDACTED in json.loads(text)["model"]


async def test_lines_wait_for_the_flush_timer_complete_and_in_order(restore_logging: None) -> None:
    out = io.StringIO()
    w = writer("json", out)
    for n in range(3):
        w.write(fields(n))
    assert out.getvalue() == ""  # queued
    logging.getLogger("odock.data_plane").warning("an ordinary record")  # written at once, after them
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r.get("request_id") for r in lines] == [fields(n).request_id for n in range(3)] + [None]
    assert lines[-1]["message"] == "an ordinary record"
    for n in range(3, 200):  # under FLUSH_CHARS: no early write
        w.write(fields(n))
    await asyncio.sleep(0)
    assert out.getvalue().count("\n") == 4  # not at the end of this loop iteration: batched
    started = time.monotonic()
    while out.getvalue().count("\n") == 4:
        await asyncio.sleep(0.001)
    assert time.monotonic() - started < FLUSH_SECONDS + 0.5  # generous: a busy CI machine
    text = out.getvalue()
    assert text.endswith("\n")
    got = [json.loads(line) for line in text.splitlines()]
    assert [r["request_id"] for r in got if "request_id" in r] == [fields(n).request_id for n in range(200)]


async def test_a_large_backlog_is_written_without_waiting_for_the_loop(restore_logging: None) -> None:
    out = io.StringIO()
    w = writer("json", out)
    count = 0
    while not out.getvalue() and count < FLUSH_CHARS:  # each line is far over 1 char: bounded
        w.write(fields(count))
        count += 1
    written = out.getvalue()
    assert len(written) >= FLUSH_CHARS and written.count("\n") == count  # all of them, in one go
    assert [json.loads(line)["request_id"] for line in written.splitlines()] == [
        fields(n).request_id for n in range(count)
    ]
    w.write(fields(count))
    await asyncio.sleep(FLUSH_SECONDS * 3)
    assert out.getvalue().count("\n") == count + 1


def test_without_a_running_loop_lines_are_written_at_once(restore_logging: None) -> None:
    out = io.StringIO()
    writer("text", out).write(fields())
    assert out.getvalue().count("\n") == 1


def test_queued_lines_are_written_when_the_process_exits() -> None:
    """The loop is left (SystemExit in a callback) before the tick that would write the lines."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        from data_plane import logs
        from odock.envconfig import LogSettings
        from tests.data_plane.test_request_log import fields

        logs.configure(LogSettings(format="json", level="info"))
        loop = asyncio.new_event_loop()

        def burst():
            w = logs.request_log()
            for n in range(500):
                w.write(fields(n))
            raise SystemExit(3)

        loop.call_soon(burst)
        loop.run_forever()
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60, check=False)
    assert proc.returncode == 3, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stderr.decode().splitlines()]
    assert [r["request_id"] for r in lines] == [fields(n).request_id for n in range(500)]


class BrokenStream(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError("stderr is gone")


async def test_a_broken_stderr_never_fails_the_request_that_writes(restore_logging: None) -> None:
    w = writer("json", BrokenStream())
    w.write(fields())  # queued: the tick's write fails quietly
    await asyncio.sleep(FLUSH_SECONDS * 3)
    for n in range(FLUSH_CHARS // 100):  # past the bound: the write happens in this call
        w.write(fields(n))
    await asyncio.to_thread(w.write, fields())  # no loop in that thread: written at once


@pytest.mark.parametrize("fmt", ["json", "text"])
async def test_a_line_is_rendered_after_its_request_but_carries_the_time_the_request_finished(
    fmt: str, restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = io.StringIO()
    w = writer(fmt, out)
    monkeypatch.setattr("data_plane.logs.time.time", lambda: 1_700_000_000.25)  # 2023-11-14T22:13:20.250Z
    w.write(fields(1))
    monkeypatch.setattr("data_plane.logs.time.time", lambda: 1_700_000_999.0)  # when the loop renders it
    await asyncio.sleep(FLUSH_SECONDS * 3)
    text = out.getvalue()
    assert text.count("\n") == 1 and "2023-11-14T22:13:20.250Z" in text, text


@pytest.mark.parametrize("fmt", ["json", "text"])
async def test_a_line_that_cannot_be_rendered_is_said_in_its_place_and_the_others_are_kept(
    fmt: str, restore_logging: None
) -> None:
    out = io.StringIO()
    w = writer(fmt, out)
    w.write(fields(1))
    w.write(fields(2, status="two hundred"))  # a bug: {status:d} raises
    w.write(fields(3, model=CANARY))
    await asyncio.sleep(FLUSH_SECONDS * 3)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and CANARY not in out.getvalue()
    assert fields(1).request_id in lines[0] and fields(3).request_id in lines[2]
    assert "could not be written (ValueError)" in lines[1] and "ERROR" in lines[1].upper()
    if fmt == "json":
        assert [json.loads(line)["level"] for line in lines] == ["info", "error", "info"]
