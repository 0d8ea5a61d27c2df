"""Micro-benchmark of the relay's guards on the hot path (issue 11; figures in docs/benchmarks.md).

What each relayed chunk or request now pays: scrubbing the provider secret (a body, a streamed
chunk), finding the secret's cached scrubber, the SSE splitter's feed, and the stale-socket poll
before an idle upstream connection is reused. ``python -m scripts.benchmark.guards`` prints one
line per case: CPU nanoseconds per call (best of 5 timeit repeats), after an empty call for scale.
"""

from __future__ import annotations

import json
import select
import socket
import time
import timeit
from collections.abc import Callable
from typing import cast

from data_plane.relay import response_headers
from data_plane.scrub import Secret, secret_for
from data_plane.sse import EventSplitter
from data_plane.upstream import UpstreamResponse

SECRET = b"sk-proj-" + b"A1b2C3d4" * 8  # an OpenAI-style key, 72 bytes
CHUNK = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"gpt-4.1-mini","choices":[{"index":0,"delta":{"content":" piece"},'
    b'"logprobs":null,"finish_reason":null}]}\n\n'
)  # one typical streamed chat event
BODY = json.dumps({"choices": [{"message": {"content": "x" * 65000}}]}).encode()  # a 64 KiB answer
# Pieces that make the scrubber look for an escaped secret: a "%" in an event, JSON \u escapes
# (an encoder that escapes non-ASCII) in a whole answer, a non-SSE stream's read ending mid-word.
PERCENT_CHUNK = CHUNK.replace(b" piece", b" 50% off")
ESCAPED_BODY = json.dumps({"choices": [{"message": {"content": "caf\u00e9 " * 6500}}]}).encode()
MID_WORD = b'[{"candidates": [{"content": {"parts": [{"text": "' + b"abc def " * 40 + b"abcd"


class _Head:
    """What response_headers reads of an upstream answer: 14 headers, as an OpenAI answer has."""

    raw_headers = [(f"X-Header-{i}", f"value-{i}-abcdef") for i in range(13)] + [("x-request-id", "req_1")]


def _ns(fn: Callable[[], object], number: int) -> float:
    # CPU time of this process: other processes on a busy machine do not count.
    return min(timeit.repeat(fn, number=number, repeat=5, timer=time.process_time)) / number * 1e9


def main() -> None:
    secret = secret_for(SECRET)
    scrub = Secret(SECRET).stream()
    splitter = EventSplitter()
    head = cast("UpstreamResponse", _Head())
    left, right = socket.socketpair()
    poller = select.poll()  # as a pooled connection keeps it
    poller.register(left.fileno(), select.POLLIN | select.POLLPRI)

    def poll() -> bool:
        return bool(poller.poll(0))

    cases: list[tuple[str, Callable[[], object], int]] = [
        ("an empty Python call (scale)", lambda: None, 500_000),
        (f"scrub a streamed event ({len(CHUNK)} B), whole-piece", lambda: secret.bytes(CHUNK), 200_000),
        (f"scrub a streamed event ({len(CHUNK)} B), stream scrubber", lambda: scrub.feed(CHUNK), 200_000),
        (f"scrub a buffered body ({len(BODY) // 1024} KiB)", lambda: secret.bytes(BODY), 20_000),
        (
            f"scrub an event with a % ({len(PERCENT_CHUNK)} B), stream scrubber",
            lambda: scrub.feed(PERCENT_CHUNK),
            200_000,
        ),
        (
            f"scrub a buffered body with \\u escapes ({len(ESCAPED_BODY) // 1024} KiB)",
            lambda: secret.bytes(ESCAPED_BODY),
            2_000,
        ),
        (
            f"scrub a non-SSE read ending mid-word ({len(MID_WORD)} B)",
            lambda: (scrub.feed(MID_WORD), scrub.flush()),
            100_000,
        ),
        ("14 response headers, scrubbed", lambda: response_headers(head, secret), 100_000),
        ("14 response headers, no secret", lambda: response_headers(head), 100_000),
        ("find the secret's scrubber (cache hit)", lambda: secret_for(SECRET), 500_000),
        (f"split a streamed event ({len(CHUNK)} B)", lambda: splitter.feed(CHUNK), 200_000),
        ("stale-socket poll before reusing a connection", poll, 200_000),
    ]
    for name, fn, number in cases:
        print(f"{name}: {_ns(fn, number):,.0f} ns")
    left.close()
    right.close()


if __name__ == "__main__":
    main()
