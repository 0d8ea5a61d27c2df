"""``n`` streamed choices from a backend without ``n`` (Anthropic): ``n`` upstream streams interleaved.

Each upstream stream has its own translator ``ChunkWriter``; its chunks are written to the client
as they come, whichever stream they belong to, with the choice's ``index`` set to the stream's
number (the chunks share one id). Each writer's own usage chunk and ``[DONE]`` are held back: at
the end comes one usage chunk with the streams' sums (when the client asked for
``include_usage``), then ``[DONE]``. Usage is metered from each NATIVE stream (the backend's tap,
one per stream) and summed into the request's one record. A stream that breaks ends the reply
with OpenAI's error chunk and stops the others.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from data_plane.errors import GatewayError, sse_error_event
from data_plane.providers import OPENAI
from data_plane.providers.translator import ChunkWriter, ReplyIds, UpstreamCall
from data_plane.relay import UPSTREAM_BROKEN, UPSTREAM_EVENT_TOO_LARGE, UPSTREAM_STALLED
from data_plane.sse import EventSplitter, EventTooLarge
from data_plane.translated_relay import TranslatedRelay, split_events, untranslatable
from data_plane.upstream.errors import UpstreamError
from data_plane.upstream.response import UpstreamResponse
from data_plane.usage.meter import CANCELLED, COMPLETE, FLAG_CLAMPED, FLAG_MALFORMED, PARTIAL, RequestMeter
from data_plane.usage.stream import make_tap
from data_plane.usage.tokens import make_usage

_DONE = b"[DONE]"


class _Choice:
    """One upstream stream: its writer, its native usage, the OpenAI usage its writer reported."""

    def __init__(self, index: int, writer: ChunkWriter, meter: RequestMeter) -> None:
        self.index = index
        self.writer = writer
        self.meter = meter  # a record-less meter: the tap's sink for this stream's native usage
        self.usage: dict[str, Any] | None = None


class _Interleaved:
    def __init__(self, relay: TranslatedRelay, resp: web.StreamResponse, include_usage: bool) -> None:
        self.relay = relay
        self.resp = resp
        self.include_usage = include_usage
        self.lock = asyncio.Lock()

    def rewrite(self, choice: _Choice, out: bytes) -> bytes:
        """A writer's ``data:`` lines with the choice's index; its usage chunk and [DONE] kept back."""
        lines: list[bytes] = []
        for event in split_events(out):
            data = event.removeprefix(b"data:").strip()
            if data == _DONE:
                continue
            doc = orjson.loads(data)
            if not isinstance(doc, dict):
                continue
            choices = doc.get("choices")
            if "error" in doc:
                raise _StreamError(data)
            if choices == [] and doc.get("usage") is not None:
                choice.usage = doc["usage"]
                continue
            for item in choices or ():
                if isinstance(item, dict):
                    item["index"] = choice.index
            if not self.include_usage:
                doc.pop("usage", None)
            lines.append(b"data: " + orjson.dumps(doc) + b"\n\n")
        return b"".join(lines)

    async def write(self, data: bytes) -> None:
        if data:
            async with self.lock:
                self.relay.meter.first_byte()
                await self.resp.write(self.relay.secret.bytes(data))

    async def pump(self, upstream: UpstreamResponse, choice: _Choice) -> None:
        relay = self.relay
        tap = make_tap(choice.meter, is_sse=True, strip_injected=False)
        splitter = EventSplitter(relay.max_event)
        while True:
            try:
                chunk = await relay.read(upstream)
            except TimeoutError:
                raise GatewayError(504, "upstream_timeout", UPSTREAM_STALLED) from None
            except (UpstreamError, OSError):
                raise GatewayError(502, "upstream_reset", UPSTREAM_BROKEN) from None
            try:
                block = splitter.feed(chunk) if chunk else splitter.flush()
            except EventTooLarge:
                raise GatewayError(502, "upstream_event_too_large", UPSTREAM_EVENT_TOO_LARGE) from None
            if block:
                if tap is not None:
                    tap.relay(block)
                for event in split_events(block):
                    await self.write(self._translated(choice, choice.writer.feed, event))
            if not chunk:
                await self.write(self._translated(choice, lambda _: choice.writer.close(), b""))
                return

    def _translated(self, choice: _Choice, step: Any, event: bytes) -> bytes:
        try:
            return self.rewrite(choice, step(event))
        except _StreamError:
            raise
        except Exception:  # noqa: BLE001 - an event the translator cannot read ends the reply
            raise untranslatable() from None


class _StreamError(Exception):
    """A writer turned a provider's error event into an OpenAI error chunk."""

    def __init__(self, data: bytes) -> None:
        super().__init__("upstream stream error")
        self.data = data


async def stream_choices(
    relay: TranslatedRelay, url: str, headers: dict[str, str], call: UpstreamCall, ids: ReplyIds,
    include_usage: bool, n: int,
) -> web.StreamResponse:  # fmt: skip
    """``n`` upstream streams of ``call`` interleaved into one reply of ``n`` choices."""
    meter = relay.meter
    sends = [asyncio.ensure_future(relay.send(url, headers, call)) for _ in range(n)]
    try:
        upstreams = await asyncio.gather(*sends)
    except BaseException:
        for task in sends:
            task.cancel()
        for result in await asyncio.gather(*sends, return_exceptions=True):
            if isinstance(result, UpstreamResponse):
                result.release()
        raise
    try:
        for upstream in upstreams:
            if upstream.status >= 300:
                return relay.respond(await relay.error_answer(upstream), meter_usage=False)
        return await _interleave(relay, upstreams, ids, include_usage)
    finally:
        meter.upstream_finished()
        for upstream in upstreams:
            upstream.release()


async def _interleave(
    relay: TranslatedRelay, upstreams: list[UpstreamResponse], ids: ReplyIds, include_usage: bool
) -> web.StreamResponse:
    meter = relay.meter
    resp = relay.stream_response()
    await resp.prepare(relay.request)
    out = _Interleaved(relay, resp, include_usage)
    choices = [
        _Choice(i, relay.translator.chunks(ids, True), RequestMeter(
            None, request_id="", node_id="", org_id="", key_id="", family=meter.family, endpoint="",
            shape=meter.shape))
        for i in range(len(upstreams))
    ]  # fmt: skip
    tasks = [asyncio.ensure_future(out.pump(u, c)) for u, c in zip(upstreams, choices, strict=True)]
    failure: bytes | None = None
    try:
        try:
            await asyncio.gather(*tasks)
        except GatewayError as err:
            failure = sse_error_event(OPENAI, err)
            meter.settle(200, PARTIAL, err.code)
        except _StreamError as err:
            failure = b"data: " + err.data + b"\n\n"
            meter.settle(200, PARTIAL, "upstream_error")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            _meter_sum(meter, choices)  # also when the client went away: what was read is metered
        if failure is not None:
            await out.write(failure)
        else:
            if include_usage:
                usage = sum_counts([c.usage for c in choices])
                chunk = {"id": ids.id, "object": "chat.completion.chunk", "created": ids.created,
                         "model": ids.model, "choices": [], "usage": usage}  # fmt: skip
                await out.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            await out.write(b"data: [DONE]\n\n")
            meter.settle(200, COMPLETE)
        await resp.write_eof()
    except ConnectionResetError:
        meter.settle(200, CANCELLED)
    return resp


def _meter_sum(meter: RequestMeter, choices: list[_Choice]) -> None:
    parts = [c.meter.usage for c in choices if c.meter.usage is not None]
    if any(c.meter.flags & FLAG_MALFORMED for c in choices):
        meter.malformed()
    if not parts:
        return
    meter.report(
        make_usage(
            input=sum(u.input for u in parts),
            output=sum(u.output for u in parts),
            cached=sum(u.cached for u in parts),
            reasoning=sum(u.reasoning for u in parts),
            parts=False,
        ),
        final=True,
    )
    if any(u.clamped for u in parts):
        meter.flags |= FLAG_CLAMPED


def sum_counts(usages: list[Any]) -> Any:
    """OpenAI usage objects summed member by member (nested details too; None when there are none)."""
    dicts = [u for u in usages if isinstance(u, dict)]
    if not dicts:
        return None
    out: dict[str, Any] = {}
    for usage in dicts:
        for name, value in usage.items():
            if isinstance(value, bool):
                continue
            if isinstance(value, int):
                out[name] = out.get(name, 0) + value
            elif isinstance(value, dict):
                out[name] = sum_counts([out.get(name), value])
    return out
