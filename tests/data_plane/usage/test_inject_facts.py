"""include_usage injection gives the same bytes whether or not the body's inspection is passed in."""

from __future__ import annotations

import pytest

from data_plane.payload import inspect_json
from data_plane.usage.inject import ensure_include_usage

BODIES = [
    b'{"model":"m","stream":true}',
    b'  {\n "model":"m"}  ',
    b"{}",
    b" { } ",
    b'{"model":"m","stream_options":{"include_usage":true}}',
    b'{"model":"m","stream_options":{"include_usage":false,"x":1}}',
    b'{"model":"m","stream_options":null}',
    b'{"model":"m","stream_options":"x"}',
    b'{"model":"m","stream_options":[1]}',
    b'{"model":"m","nested":{"stream_options":null}}',
]


@pytest.mark.parametrize("body", BODIES, ids=lambda b: repr(b)[:40])
def test_same_result_with_and_without_facts(body: bytes) -> None:
    with_facts = ensure_include_usage(body, inspect_json(body))
    assert with_facts == ensure_include_usage(body)
    assert all(type(part) is bytes for part in (with_facts[0],))


def test_insertion_keeps_every_other_byte() -> None:
    body = b'\r\n {\t"model" : "m" ,"messages":[]}\n'
    out, added = ensure_include_usage(body, inspect_json(body))
    assert added and out == b'\r\n {"stream_options":{"include_usage":true},\t"model" : "m" ,"messages":[]}\n'
