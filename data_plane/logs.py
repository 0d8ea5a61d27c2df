"""Process-wide logging for the data plane, configured once at startup.

``json``: one JSON object per line (``time``, ``level``, ``logger``, ``message``,
then any ``extra=`` fields, then ``exception``). ``text``: the classic
``time LEVEL logger: message key=value`` line. Both go to stderr. The same
shapes as the control plane's (both come from ``odock.logfmt``).

Nothing in the data plane logs secrets on purpose: virtual keys are reduced to
their digest at once and never kept, provider keys live only inside cached
routes, and request and response bodies are never logged (there is no switch
to log them). As a second line of defence the handler replaces the secrets
this process is configured with (node token, pepper) with ``[redacted]``.

The per-request line is the one log line written on the hot path, so it skips
the ``logging`` machinery (record, formatter, a write and flush per line): a
request queues its fields and the time with the handler's stream, a
:class:`LineBuffer`, and at most ``FLUSH_SECONDS`` later the buffer has
:class:`RequestLog` render the queued lines straight to the handler's format,
redact them with the handler's formatter, and writes them. Rendering them
together, after the responses went out, is part of what made a chat request at
c=64 cost 7 % less CPU (issue 16, docs/benchmarks.md).
Ordinary records still go through ``logging`` and are written at once, after
any request lines queued before them, so lines stay in order.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple, TextIO

from data_plane.settings import Settings
from odock import logfmt
from odock.envconfig import LogSettings
from odock.logfmt import LogSetup, Redacting

# Chatter (access logs are off anyway: the request log replaces them), or gRPC internals.
QUIET_LOGGERS = ("aiohttp.access", "grpc._cython", "asyncio")
REQUEST_LOGGER = "odock.data_plane.request"
# Queued request lines are written by a callback this long after the first of them was queued, or
# at once past FLUSH_CHARS. Written at the end of each loop iteration instead, streams at c=16 cost
# 6 us more CPU each in the bench (an iteration often ends one stream: a write per line).
FLUSH_SECONDS = 0.01
FLUSH_CHARS = 64 * 1024
# What a queued request line counts towards FLUSH_CHARS before it is rendered: less than any
# line's length (the names of its fields alone take about 200 characters), so the bound holds.
QUEUED_LINE_CHARS = 256


class LineBuffer:
    """The log handler's stream: records pass straight through, request lines wait for the loop tick.

    A request line waits as its fields and time; ``render`` (set by :class:`RequestLog`) turns
    each run of queued lines into text when they are written.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._pending: list[str | tuple[RequestFields, float]] = []
        self._chars = 0
        # Re-entrant like logging's own handler lock: a signal handler that logs may interrupt a flush.
        self._lock = threading.RLock()  # the handler is used from other threads too
        self._tick_loop: asyncio.AbstractEventLoop | None = None
        # Set by the RequestLog that queues the lines (the only caller of add_request).
        self.render: Callable[[list[tuple[RequestFields, float]]], str] | None = None

    def write(self, text: str) -> int:
        """Queue ``text`` (the logging handler calls :meth:`flush` right after)."""
        with self._lock:
            self._pending.append(text)
        return len(text)

    def flush(self) -> None:
        """Write everything queued, in order, with one write to the stream."""
        with self._lock:
            pending, self._pending, self._chars = self._pending, [], 0
            if pending:
                self.stream.write(self._text(pending))
            self.stream.flush()

    def _text(self, pending: list[str | tuple[RequestFields, float]]) -> str:
        render = self.render
        out: list[str] = []
        run: list[tuple[RequestFields, float]] = []
        for item in pending:
            if isinstance(item, str):
                if run:
                    assert render is not None  # queued by a RequestLog, which set it
                    out.append(render(run))
                    run = []
                out.append(item)
            else:
                run.append(item)
        if run:
            assert render is not None
            out.append(render(run))
        return "".join(out)

    def add_request(self, fields: RequestFields, when: float) -> None:
        """Queue one request's line (its fields, and the time it finished); rendered and written by
        a loop callback within ``FLUSH_SECONDS``, with every line queued meanwhile."""
        with self._lock:
            self._pending.append((fields, when))
            self._chars += QUEUED_LINE_CHARS
            full = self._chars >= FLUSH_CHARS
        try:
            loop = None if full else asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread: nothing would run the flush later
            loop = None
        if loop is None:
            self._flush_quietly()
        elif self._tick_loop is not loop:
            self._tick_loop = loop
            loop.call_later(FLUSH_SECONDS, self._tick)

    def _tick(self) -> None:
        self._tick_loop = None
        self._flush_quietly()

    def _flush_quietly(self) -> None:
        # Never an error for the request that happens to write: stderr gone or closed loses the lines.
        with contextlib.suppress(OSError, ValueError):
            self.flush()


class RequestFields(NamedTuple):
    """The fields of one request line, in the order they are written (docs/operations.md)."""

    request_id: str
    node_id: str
    org_id: str
    key_id: str
    model: str
    family: str
    endpoint: str
    method: str
    status: int
    outcome: str
    streamed: bool
    latency_ms: float
    overhead_ms: float
    upstream_first_byte_ms: float | None
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    # The routing fields come before the older optional ones, so a line still ends with the
    # client's id when it has one (as it did before routing).
    deployment: str = ""  # the deployment that answered (or the last tried); only when set
    attempts: int = 0  # upstream attempts; only for a request that went upstream
    error_code: str = ""  # written only when set
    client_request_id: str = ""  # the client's x-request-id (validated: [A-Za-z0-9._:-]{1,128}); only when set

    def message(self) -> str:
        """``POST /v1/messages 200 complete``."""
        return f"{self.method} {self.endpoint} {self.status:d} {self.outcome}"

    def extra(self) -> dict[str, object]:
        """The fields as ``logging`` ``extra=`` (the optional ones only when set)."""
        out: dict[str, object] = self._asdict()
        for optional in ("deployment", "attempts", "error_code", "client_request_id"):
            if not out[optional]:
                del out[optional]
        return out


def _jstr(value: str) -> str:
    """``value`` escaped as ``json.dumps(value, ensure_ascii=False)`` would, without the quotes."""
    if value.isprintable() and '"' not in value and "\\" not in value:
        return value  # nothing JSON escapes (controls, quote, backslash) can be in it
    return json.dumps(value, ensure_ascii=False)[1:-1]


def _tstr(value: str) -> str:
    """``value`` for a text line: as is, but controls escaped so no value can start a new line."""
    return value if value.isprintable() else value.encode("unicode_escape").decode("ascii")


class RequestLog:
    """Renders request lines in the handler's format, redacted, into its :class:`LineBuffer`."""

    def __init__(self, buffer: LineBuffer, formatter: Redacting, json_format: bool) -> None:
        self.buffer = buffer
        buffer.render = self.render
        self._formatter = formatter
        self._json = json_format
        self._second = -1
        self._second_text = ""

    def write(self, f: RequestFields) -> None:
        """Queue the line of one finished request (rendered when it is written)."""
        self.buffer.add_request(f, time.time())

    def render(self, queued: list[tuple[RequestFields, float]]) -> str:
        """The lines of queued requests, redacted: one redaction pass over them all (no secret
        holds a newline, so none can span two lines)."""
        line = self._json_line if self._json else self._text_line
        lines: list[str] = []
        for f, when in queued:
            try:
                lines.append(line(f, when))
            except Exception as exc:  # noqa: BLE001 - a rendering bug loses one line, said in its place
                lines.append(self._unwritable(when, type(exc).__name__))
        return self._formatter.scrub("".join(lines), escaped=self._json)

    def _unwritable(self, when: float, error: str) -> str:
        message = f"the line of a request could not be written ({error})"
        if self._json:
            return (f'{{"time": "{self._time(when)}", "level": "error", "logger": "{REQUEST_LOGGER}", '
                    f'"message": "{message}"}}\n')  # fmt: skip
        return f"{self._time(when)} ERROR {REQUEST_LOGGER}: {message}\n"

    def _time(self, now: float) -> str:
        """``now`` as ``logfmt`` writes it (UTC, milliseconds, ``Z``); the date part is kept per second."""
        second = int(now)
        if second != self._second:
            stamp = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
            self._second, self._second_text = second, stamp
        return f"{self._second_text}{int((now - second) * 1000):03d}Z"

    def _json_line(self, f: RequestFields, when: float) -> str:
        (rid, node, org, key, model, family, endpoint, method, status, outcome, streamed, latency, overhead,
         first_byte, tokens_in, tokens_out, tokens_cached, dep, attempts, error, client_id) = f  # fmt: skip
        text = f"{rid}{node}{org}{key}{model}{family}{endpoint}{method}{outcome}{error}{client_id}{dep}"
        if not text.isprintable() or '"' in text or "\\" in text:  # rare: escape each string
            rid, node, org, key, model, family, endpoint, method, outcome, error, client_id, dep = map(
                _jstr, (rid, node, org, key, model, family, endpoint, method, outcome, error, client_id, dep)
            )
        line = (
            f'{{"time": "{self._time(when)}", "level": "info", "logger": "{REQUEST_LOGGER}", '
            f'"message": "{method} {endpoint} {status:d} {outcome}", "request_id": "{rid}", '
            f'"node_id": "{node}", "org_id": "{org}", "key_id": "{key}", "model": "{model}", '
            f'"family": "{family}", "endpoint": "{endpoint}", "method": "{method}", "status": {status:d}, '
            f'"outcome": "{outcome}", "streamed": {"true" if streamed else "false"}, '
            f'"latency_ms": {latency!r}, "overhead_ms": {overhead!r}, '
            f'"upstream_first_byte_ms": {"null" if first_byte is None else repr(first_byte)}, '
            f'"input_tokens": {tokens_in:d}, "output_tokens": {tokens_out:d}, '
            f'"cached_input_tokens": {tokens_cached:d}'
        )
        if dep:
            line += f', "deployment": "{dep}"'
        if attempts:
            line += f', "attempts": {attempts:d}'
        if error:
            line += f', "error_code": "{error}"'
        if client_id:
            line += f', "client_request_id": "{client_id}"'
        return line + "}\n"

    def _text_line(self, f: RequestFields, when: float) -> str:
        (rid, node, org, key, model, family, endpoint, method, status, outcome, streamed, latency, overhead,
         first_byte, tokens_in, tokens_out, tokens_cached, dep, attempts, error, client_id) = f  # fmt: skip
        text = f"{rid}{node}{org}{key}{model}{family}{endpoint}{method}{outcome}{error}{client_id}{dep}"
        if not text.isprintable():  # rare: escape controls in each string
            rid, node, org, key, model, family, endpoint, method, outcome, error, client_id, dep = map(
                _tstr, (rid, node, org, key, model, family, endpoint, method, outcome, error, client_id, dep)
            )
        line = (
            f"{self._time(when)} INFO {REQUEST_LOGGER}: {method} {endpoint} {status:d} {outcome} "
            f"request_id={rid} node_id={node} org_id={org} key_id={key} model={model} family={family} "
            f"endpoint={endpoint} method={method} status={status:d} outcome={outcome} streamed={streamed} "
            f"latency_ms={latency!r} overhead_ms={overhead!r} upstream_first_byte_ms={first_byte!r} "
            f"input_tokens={tokens_in:d} output_tokens={tokens_out:d} cached_input_tokens={tokens_cached:d}"
        )
        if dep:
            line += f" deployment={dep}"
        if attempts:
            line += f" attempts={attempts:d}"
        if error:
            line += f" error_code={error}"
        if client_id:
            line += f" client_request_id={client_id}"
        return line + "\n"


_REQUEST_LOG: RequestLog | None = None


def request_log() -> RequestLog | None:
    """The installed request-line writer (None until :func:`configure` ran: lines go through ``logging``)."""
    return _REQUEST_LOG


def configure(settings: LogSettings, stream: TextIO | None = None) -> LogSetup:
    """Install this plane's stderr handler at ``settings.level`` (see ``odock.logfmt``)."""
    global _REQUEST_LOG
    buffer = LineBuffer(stream if stream is not None else sys.stderr)
    setup = logfmt.configure(settings.format, settings.level, QUIET_LOGGERS, buffer)
    _REQUEST_LOG = RequestLog(buffer, setup.formatter, settings.format == "json")
    return setup


def flush() -> None:
    """Write any queued request lines now (shutdown)."""
    if _REQUEST_LOG is not None:
        _REQUEST_LOG.buffer.flush()


def secret_values(settings: Settings) -> list[str]:
    """The strings a log line must never contain: the node token and the pepper (every spelling)."""
    values = [settings.node_token]
    raw = settings.key_pepper
    for text in (base64.b64encode(raw).decode("ascii"), base64.urlsafe_b64encode(raw).decode("ascii")):
        values += [text, text.rstrip("=")]
    values.append(raw.hex())
    return values
