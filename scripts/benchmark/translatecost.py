"""What translating an OpenAI chat completion costs per request, in microseconds (issue 13).

Runs the data plane's translators in-process (no network, no planes) over what the gateway does
per translated request, in its order: the body parsed once (``translated.parse_chat``), the
native request built (``ChatTranslator.request``), then either the native 200 answer read into a
``chat.completion`` and serialised (``answer`` + ``orjson.dumps``), or a streamed answer fed
event by event through a ``ChunkWriter`` (``feed`` per event, ``close``). Upstream bodies are
the strict fakes' scripted replies (``tests/fakes``), so the figures follow what the tests check.

Run: ``python -m scripts.benchmark.translatecost [--requests 20000] [--rounds 5]``. Prints one
JSON line per case with the median of the rounds (min-max alongside) of microseconds per request.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from data_plane.providers import ANTHROPIC, GEMINI, TRANSLATORS
from data_plane.providers.translator import ReplyIds, TranslatedModel
from data_plane.sse import EventSplitter
from data_plane.translated import parse_chat
from data_plane.translated_relay import split_events
from tests.fakes import anthropic_messages, gemini_generate
from tests.fakes.reply import sse

IDS = ReplyIds(id="chatcmpl-bench", created=1_700_000_000, model="bench")
PLAIN = {"model": "bench", "messages": [{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "hello there, how are you today?"}],
         "max_tokens": 256, "temperature": 0.3}  # fmt: skip
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}  # fmt: skip
TOOLS = {
    "model": "bench",
    "messages": [
        {"role": "user", "content": "Weather in Berlin?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Berlin"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21C"},
        {"role": "user", "content": "And in Paris?"},
    ],
    "tools": [TOOL],
    "tool_choice": "auto",
}  # fmt: skip
TEXT = "The quick brown fox jumps over the lazy dog. " * 8  # ~360 characters, ~90 tokens


def anthropic_native(body: dict[str, Any]) -> tuple[bytes, list[bytes]]:
    native = json.loads(TRANSLATORS[ANTHROPIC].request(parse_chat(orjson.dumps(body)), MODEL).body)
    message = anthropic_messages.scripted_reply(native)
    if message["content"][0]["type"] == "text":
        message["content"][0]["text"] = TEXT
    return orjson.dumps(message), anthropic_messages.frames(anthropic_messages.stream_events(message))


def gemini_native() -> tuple[bytes, list[bytes]]:
    words = TEXT.split(" ")
    script = gemini_generate.Script(candidates=(gemini_generate.text(*(w + " " for w in words[:20])),))
    frames = [sse(c, newline="\r\n") for c in gemini_generate.chunks(script)]
    return orjson.dumps(gemini_generate.whole(script)), frames


MODEL = TranslatedModel(name="bench", slug="bench-upstream", max_output_tokens=1024)


def case(
    family: int, body: dict[str, Any], native: bytes, frames: list[bytes]
) -> dict[str, Callable[[], None]]:
    translator = TRANSLATORS[family]
    raw = orjson.dumps(body)
    streamed = orjson.dumps({**body, "stream": True, "stream_options": {"include_usage": True}})
    stream_bytes = b"".join(frames)

    def request_and_answer() -> None:
        translator.request(parse_chat(raw), MODEL)
        orjson.dumps(translator.answer(native, IDS))

    def request_and_stream() -> None:
        chat = parse_chat(streamed)
        translator.request(chat, MODEL)
        writer = translator.chunks(IDS, chat.include_usage)
        splitter = EventSplitter()
        for frame in frames:
            for event in split_events(splitter.feed(frame)):
                writer.feed(event)
        writer.close()

    assert stream_bytes
    return {"request+answer": request_and_answer, "request+stream": request_and_stream}


def measure(fn: Callable[[], None], requests: int, rounds: int) -> dict[str, float]:
    for _ in range(min(1000, requests)):
        fn()
    results = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(requests):
            fn()
        results.append((time.perf_counter() - start) / requests * 1e6)
    return {"median_us": round(statistics.median(results), 2), "min_us": round(min(results), 2),
            "max_us": round(max(results), 2)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    a_plain, a_plain_frames = anthropic_native(PLAIN)
    a_tools, a_tools_frames = anthropic_native(TOOLS)
    g_plain, g_frames = gemini_native()
    cases = {
        "anthropic plain": (case(ANTHROPIC, PLAIN, a_plain, a_plain_frames), len(a_plain_frames)),
        "anthropic tools (2nd turn)": (case(ANTHROPIC, TOOLS, a_tools, a_tools_frames), len(a_tools_frames)),
        "gemini plain": (case(GEMINI, PLAIN, g_plain, g_frames), len(g_frames)),
    }
    for name, (fns, events) in cases.items():
        for kind, fn in fns.items():
            row: dict[str, Any] = {"case": name, "kind": kind, **measure(fn, args.requests, args.rounds)}
            if kind.endswith("stream"):
                row["upstream_events"] = events
            print(json.dumps(row))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
