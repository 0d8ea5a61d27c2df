"""The batch input file check and rewrite (data_plane/objects/batch_input.py)."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_plane.objects.batch_input import (
    MAX_LINE_BYTES,
    BatchLineError,
    body_model_span,
    first_model,
    rewrite,
)


def line(custom_id: str = "r1", model: str = "gw", url: str = "/v1/chat/completions", **body: Any) -> bytes:
    doc = {"custom_id": custom_id, "method": "POST", "url": url, "body": {"model": model, **body}}
    return json.dumps(doc).encode()


def run(data: bytes, model: str = "gw", slug: str = "up-slug") -> tuple[int, bytes]:
    out = io.BytesIO()
    count = rewrite(io.BytesIO(data), out, model, slug)
    return count, out.getvalue()


def refused(data: bytes) -> BatchLineError:
    with pytest.raises(BatchLineError) as info:
        run(data)
    return info.value


def test_every_line_gets_the_slug_and_nothing_else_changes() -> None:
    first = b'{"custom_id":"a", "method":"POST","url":"/v1/chat/completions",  "body":{"messages":[{"role":"user","content":"model"}],"model":"gw","temperature":0.10}}'
    second = b'{"body": {"model" : "gw", "input": ["x"]}, "url": "/v1/embeddings", "method": "POST", "custom_id": "b"}'
    count, out = run(first + b"\r\n" + second + b"\n")
    assert count == 2
    assert out == (first.replace(b'"model":"gw"', b'"model":"up-slug"') + b"\r\n"
                   + second.replace(b'"model" : "gw"', b'"model" : "up-slug"') + b"\n")


def test_nested_model_keys_elsewhere_are_left_alone() -> None:
    data = (b'{"custom_id":"a","extra":{"body":{"model":"gw"}},"method":"POST","url":"/v1/responses",'
            b'"body":{"tools":[{"model":"gw"}],"metadata":{"model":"gw"},"model":"gw"}}')
    _, out = run(data)
    doc = json.loads(out)
    assert doc["body"]["model"] == "up-slug"
    assert doc["extra"]["body"]["model"] == "gw" and doc["body"]["tools"][0]["model"] == "gw"
    assert doc["body"]["metadata"]["model"] == "gw"


def test_bom_blank_lines_and_a_missing_final_newline() -> None:
    data = b"\xef\xbb\xbf" + line("a") + b"\n\n   \n" + line("b")
    assert first_model(io.BytesIO(data)) == (1, "gw")
    count, out = run(data)
    assert count == 2
    assert out == line("a", "up-slug") + b"\n" + line("b", "up-slug")


def test_first_model_skips_leading_blank_lines_and_names_the_line() -> None:
    assert first_model(io.BytesIO(b"\n\r\n" + line(model="m1"))) == (3, "m1")
    with pytest.raises(BatchLineError) as info:
        first_model(io.BytesIO(b"\n{not json}\n"))
    assert info.value.message.startswith("Line 2: not a valid JSON request")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (line("a") + b"\n" + line("a"), "Line 2: 'custom_id' 'a' is already used by line 1"),
        (line("a") + b"\n\n" + line("b", model="other"), "Line 3: every line must name the same model"),
        (line("a") + b"\n" + line("b", url="/v1/images/generations"), "Line 2: 'url' must be one of"),
        (line("a").replace(b'"POST"', b'"GET"'), "Line 1: 'method' must be \"POST\""),
        (line("").replace(b'"custom_id": ""', b'"custom_id": 5'), "Line 1: 'custom_id' must be a non-empty string"),
        (line("a", "x" * 0).replace(b'"model": ""', b'"model": null'), "Line 1: 'body.model' must name a model"),
        (b'{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":[1]}', "Line 1: 'body' must be a JSON object"),
        (b'{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{"model":"gw","model":"x"}}',
         "Line 1: not a valid JSON request: duplicate key"),
        (b'[1, 2]', "Line 1: not a valid JSON request"),
        (b'{"custom_id":"a","body":{"model":"gw","t":NaN},"method":"POST","url":"/v1/embeddings"}',
         "Line 1: not a valid JSON request"),
        (line("a") + b"\n" + b"\xff\xfe", "Line 2: not a valid JSON request"),
        (b"\n\n", "The batch input file holds no requests"),
        (b"", "The batch input file holds no requests"),
    ],
)
def test_bad_lines_are_refused_with_their_number(data: bytes, expected: str) -> None:
    assert refused(data).message.startswith(expected)


def test_a_line_over_the_limit_is_refused_without_reading_it_whole() -> None:
    big = line("a", text="x" * (MAX_LINE_BYTES + 10))
    err = refused(line("z") + b"\n" + big + b"\n")
    assert err.message == f"Line 2: longer than the limit of {MAX_LINE_BYTES} bytes"


def test_escaped_keys_are_understood() -> None:
    data = b'{"custom_id":"a","method":"POST","url":"/v1/embeddings","\\u0062ody":{"m\\u006fdel":"gw"}}'
    _, out = run(data)
    assert json.loads(out)["body"]["model"] == "up-slug"


def test_time_is_linear_in_the_number_of_lines() -> None:
    def seconds(n: int) -> float:
        data = b"\n".join(line(f"r{i}", messages=[{"role": "user", "content": "hi " * 20}]) for i in range(n))
        start = time.perf_counter()
        assert run(data)[0] == n
        return time.perf_counter() - start

    seconds(200)  # warm up
    small, large = seconds(2_000), seconds(20_000)
    assert large < small * 10 * 4  # ten times the lines: about ten times the time (generous for shared CI)


_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(max_size=12))
_json = st.recursive(_json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=80), _json.map(lambda v: json.dumps(v).encode())), max_size=6))
def test_random_lines_never_crash(lines: list[bytes]) -> None:
    data = b"\n".join(lines)
    try:
        count, out = run(data)
    except BatchLineError as exc:
        assert 0 <= exc.line <= data.count(b"\n") + 1  # a generated line may hold newlines itself
    else:
        assert count >= 1 and out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["temperature", "input", "model_x", "n", "metadata"]), _json,
                                max_size=4), min_size=1, max_size=8),
       st.lists(st.sampled_from([b"\n", b"\r\n", b"\n\n", b"\n \n"]), min_size=8, max_size=8))
def test_valid_files_keep_every_byte_but_the_model(bodies: list[dict[str, Any]], endings: list[bytes]) -> None:
    raw = [line(f"id{i}", **body) for i, body in enumerate(bodies)]
    data = b"".join(r + endings[i] for i, r in enumerate(raw))
    count, out = run(data)
    assert count == len(raw)
    written = [r for r in out.replace(b"\r\n", b"\n").split(b"\n") if r]
    assert len(written) == len(raw)
    for before, after in zip(raw, written, strict=True):
        span = body_model_span(before)
        assert span is not None
        assert after == before[: span[0]] + b'"up-slug"' + before[span[1]:]
        assert json.loads(after)["body"] == {**json.loads(before)["body"], "model": "up-slug"}
