"""CPU per streamed request of metering, translation and routing, in microseconds (issue 16).

Drives the data plane's own objects in-process (no sockets, no planes) and reports process CPU
time (``time.process_time``) per request, the median of several rounds, the cases of a pair
interleaved round by round so that a noisy neighbour hits both alike:

- ``metering``: a 24-chunk OpenAI chat stream (one upstream read per event) relayed as
  ``relay.py`` does (``EventSplitter`` then ``StreamScrubber``), metering off, against metering
  on: ``include_usage`` injected into the request (``ensure_include_usage``), the upstream's
  stream then carrying ``"usage":null`` on every chunk plus the usage-only chunk, the
  ``ChatTap`` reading and stripping it, the ``RequestMeter`` opened, closed and its record
  encoded (what the shipper's submit does with it is H8's and not counted here);
- ``translation``: a native Anthropic Messages stream (96 events: the strict fake's reply of
  ~90 output tokens) relayed with the ``MessagesTap`` and the scrubber, against the same stream
  translated to OpenAI chunks as ``translated_relay.py`` does (the chat request parsed and
  translated, the tap, ``split_events``, ``ChunkWriter.feed`` per event, the scrubber, ``close``);
- ``routing``: ``attempts.run`` over a leg whose upstream answers at once, for a model with
  one deployment (``SinglePlan``) and one with three healthy ones (``RoutedPlan``).

These are the parts that differ between the cases; the HTTP work both share (aiohttp reading
the client request, the upstream read loop, the client writes) is not in the figures, so a
ratio here is an upper bound of the end-to-end ratio.

Run: ``python -m scripts.benchmark.streamcost [--requests 5000] [--rounds 7] [--only metering]``.
Prints one JSON line per case with the median (min-max alongside) of CPU µs per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from data_plane import attempts
from data_plane.exchange import Exchange
from data_plane.governance.domain import Deployment, Pricing, Route
from data_plane.payload import inspect_json
from data_plane.providers import ANTHROPIC, OPENAI, TRANSLATORS, endpoint_named
from data_plane.providers.translator import ReplyIds
from data_plane.routing import Health
from data_plane.scrub import Secret
from data_plane.settings import RoutingSettings
from data_plane.sse import EventSplitter
from data_plane.translated import parse_chat
from data_plane.translated_relay import split_events
from data_plane.upstream.response import UpstreamResponse
from data_plane.usage.inject import ensure_include_usage
from data_plane.usage.meter import COMPLETE, RequestMeter
from data_plane.usage.shapes import NO_USAGE
from data_plane.usage.stream import make_tap
from scripts.benchmark.translatecost import MODEL, PLAIN, anthropic_native

CHAT = endpoint_named("/v1/chat/completions")
MESSAGES = endpoint_named("/v1/messages")
SECRET = Secret(b"sk-bench-0123456789abcdefghijklmnop")
PRICING = Pricing(input_per_mtok_micros=400_000, output_per_mtok_micros=1_600_000)
IDS = ReplyIds(id="chatcmpl-bench", created=1_700_000_000, model="bench")
WORDS = ["The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog,", "then", "naps", "in", "the",
         "warm", "afternoon", "sun", "while", "the", "farmer", "reads", "a", "book"]  # fmt: skip


class Sink:
    """The shipper's place in the meter: records are built and encoded (as the journal does), then dropped."""

    def submit_closed(self, meter: RequestMeter) -> None:
        meter.final_record().SerializeToString()


SINK = Sink()


def openai_frames(include_usage: bool) -> list[bytes]:
    """A 24-chunk chat stream as OpenAI writes it (compact JSON, one event per read), then [DONE]."""
    head = {"id": "chatcmpl-AbCdEf0123456789", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_0123456789"}  # fmt: skip
    deltas: list[tuple[dict[str, Any], str | None]] = [({"role": "assistant", "content": ""}, None)]
    deltas += [({"content": w + " "}, None) for w in WORDS[:22]]
    deltas.append(({}, "stop"))
    frames = []
    for delta, finish in deltas:
        chunk: dict[str, Any] = {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                       "finish_reason": finish}]}  # fmt: skip
        if include_usage:
            chunk["usage"] = None
        frames.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
    if include_usage:
        usage = {"prompt_tokens": 23, "completion_tokens": 24, "total_tokens": 47,
                 "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}  # fmt: skip
        frames.append(b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n")
    frames.append(b"data: [DONE]\n\n")
    return frames


def meter(endpoint: Any, family: int) -> RequestMeter:
    m = RequestMeter(SINK, request_id="req_0123456789abcdef", node_id="node-1", org_id="org_bench",
                     key_id="key_bench", family=family, endpoint=endpoint.name, shape=endpoint.usage)  # fmt: skip
    m.model_name, m.upstream_slug, m.pricing, m.streamed = "bench", "bench-upstream", PRICING, True
    return m


def metering_cases() -> dict[str, Callable[[], None]]:
    body = orjson.dumps({**PLAIN, "stream": True})
    facts = inspect_json(body)  # the gateway inspects every body, metered or not
    plain, usage = openai_frames(False), openai_frames(True)

    def off() -> None:
        splitter, scrub = EventSplitter(), SECRET.stream()
        for frame in plain:
            scrub.feed(splitter.feed(frame))
        scrub.flush()

    def on() -> None:
        m = meter(CHAT, OPENAI)
        ensure_include_usage(body, facts)
        tap = make_tap(m, is_sse=True, strip_injected=True)
        assert tap is not None
        splitter, scrub = EventSplitter(), SECRET.stream()
        for frame in usage:
            data = scrub.feed(splitter.feed(frame))
            if data:
                tap.relay(data)
        scrub.flush()
        m.settle(200, COMPLETE)
        m.close()

    return {"metering off": off, "metering on": on}


def translation_cases() -> dict[str, Callable[[], None]]:
    translator = TRANSLATORS[ANTHROPIC]
    streamed = orjson.dumps({**PLAIN, "stream": True, "stream_options": {"include_usage": True}})
    _, frames = anthropic_native(PLAIN)

    def native() -> None:
        m = meter(MESSAGES, ANTHROPIC)
        tap = make_tap(m, is_sse=True, strip_injected=False)
        assert tap is not None
        splitter, scrub = EventSplitter(), SECRET.stream()
        for frame in frames:
            data = scrub.feed(splitter.feed(frame))
            if data:
                tap.relay(data)
        scrub.flush()
        m.settle(200, COMPLETE)
        m.close()

    def translated() -> None:
        m = meter(MESSAGES, ANTHROPIC)
        chat = parse_chat(streamed)
        translator.request(chat, MODEL)
        writer = translator.chunks(IDS, chat.include_usage)
        tap = make_tap(m, is_sse=True, strip_injected=False)
        assert tap is not None
        splitter, scrub = EventSplitter(), SECRET.stream()
        for frame in frames:
            block = splitter.feed(frame)
            if block:
                tap.relay(block)
                for event in split_events(block):
                    out = writer.feed(event)
                    if out:
                        scrub.feed(out)
        scrub.feed(writer.close())
        scrub.flush()
        m.settle(200, COMPLETE)
        m.close()

    return {"anthropic native": native, "openai->anthropic translated": translated}


class _Leg:
    """A leg whose deployments answer 200 at once; pass_on returns without relaying."""

    def __init__(self, route: Route) -> None:
        self.route = route

    def enter(self, meter: RequestMeter) -> None:
        pass

    async def open(self, dep: Deployment) -> UpstreamResponse:
        answer = UpstreamResponse(None)  # type: ignore[arg-type]  # never read
        answer.status = 200
        return answer

    async def pass_on(self, upstream: UpstreamResponse) -> Any:
        return upstream

    async def hold(self, upstream: UpstreamResponse) -> Any:
        raise AssertionError("healthy deployments never fail")

    def answer(self, dep: Deployment, upstream: UpstreamResponse, body: bytes) -> Any:
        raise AssertionError("healthy deployments never fail")


def _route(name: str, count: int) -> Route:
    deps = tuple(Deployment(f"d{i}", f"http://d{i}.invalid", f"slug-{i}", 30.0, f"cred_{i}",
                            f"sk-{i}-0123456789abcdef".encode(), 1, 0) for i in range(count))  # fmt: skip
    first = deps[0]
    return Route("org", f"mdl_{name}", name, OPENAI, first.upstream_slug, first.base_url, first.timeout, True,
                 first.credential_id, first.secret, PRICING, deployments=deps)  # fmt: skip


def routing_cases(loop: asyncio.AbstractEventLoop) -> tuple[dict[str, Callable[[], None]], int]:
    settings = RoutingSettings()
    health = Health(settings)
    single, routed = _Leg(_route("one", 1)), _Leg(_route("three", 3))
    batch = 100  # requests per loop entry: the loop's own cost stays out of the figure

    def case(leg: _Leg) -> Callable[[], None]:
        async def many() -> None:
            for _ in range(batch):
                ex = Exchange("rec", "rec", "", CHAT, 0.0)
                m = RequestMeter(None, request_id="rec", node_id="n", org_id="org", key_id="k", family=OPENAI,
                                 endpoint=CHAT.name, shape=NO_USAGE)  # fmt: skip
                await attempts.run(ex, m, health, settings, leg, 1e18)

        def run() -> None:
            loop.run_until_complete(many())

        return run

    return {"1 deployment": case(single), "3 healthy deployments": case(routed)}, batch


def measure(
    pair: dict[str, Callable[[], None]], requests: int, rounds: int, per_call: int = 1
) -> dict[str, list[float]]:
    calls = max(1, requests // per_call)
    for fn in pair.values():
        for _ in range(max(1, calls // 10)):
            fn()
    results: dict[str, list[float]] = {name: [] for name in pair}
    for _ in range(rounds):
        for name, fn in pair.items():
            start = time.process_time()
            for _ in range(calls):
                fn()
            results[name].append((time.process_time() - start) / (calls * per_call) * 1e6)
    return results


def report(group: str, results: dict[str, list[float]]) -> None:
    base = None
    for name, values in results.items():
        median = statistics.median(values)
        row: dict[str, Any] = {"group": group, "case": name, "cpu_us": round(median, 2),
                               "min_us": round(min(values), 2), "max_us": round(max(values), 2)}  # fmt: skip
        if base is None:
            base = median
        else:
            row["vs_first"] = round(median / base, 3)
        print(json.dumps(row))
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", choices=("metering", "translation", "routing"))
    args = parser.parse_args(argv)
    if args.only in (None, "metering"):
        report("metering", measure(metering_cases(), args.requests, args.rounds))
    if args.only in (None, "translation"):
        report("translation", measure(translation_cases(), args.requests, args.rounds))
    if args.only in (None, "routing"):
        loop = asyncio.new_event_loop()
        try:
            cases, batch = routing_cases(loop)
            report("routing", measure(cases, args.requests * 4, args.rounds, per_call=batch))
        finally:
            loop.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
