"""inspect_json's fast path (member count, byte search for the model) agrees with the exact walk."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from data_plane.payload import PayloadError, inspect_json, with_model
from data_plane.payload.json_body import _scan
from tests.data_plane.payload.test_json_property import _encode, _encode_str, _object

DUPLICATES = [
    b'{"a":{"b":1,"b":2},"a":3}',  # the repeated inner key vanishes with the outer one
    b'{"a":"x:y","a":"z"}',  # colons inside strings
    b'{"a":"\\u003a","a":1}',  # an escaped colon would balance the count: the exact walk runs
    b'{"a":"\\u003A","x":{"b":1,"b":1}}',
    b'{"a":[' + b"1," * 40 + b'{"k":1,"k":2}]}',  # behind a long list of numbers
    b'{"a":[' + b"null," * 40 + b'{"k":1,"k":2}]}',
    b'{"k:":1,"k:":2}',  # colons inside keys
    b'{"\\u006b":1,"k":2}',
]


@pytest.mark.parametrize("body", DUPLICATES, ids=lambda b: repr(b)[:40])
def test_duplicates_the_count_sees(body: bytes) -> None:
    with pytest.raises(PayloadError) as info:
        inspect_json(body)
    assert info.value.code == "duplicate_key"


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":"\\u003a","b":"::","c":{"d:e":"f:"}}',
        b'{"model":"m","t":"https://x.example:443/a?b=c:d"}',
        b'{"v":[' + b"1.5," * 100 + b"true,false,2]}",
        b'{"v":[' + b'"a:b",' * 30 + b'"c"]}',
    ],
    ids=lambda b: repr(b)[:40],
)
def test_colons_in_strings_are_not_members(body: bytes) -> None:
    assert inspect_json(body).members == len(json.loads(body))


def test_depth_is_checked_behind_long_number_lists() -> None:
    deep = b'{"a":[' + b"1," * 40 + b"[" * 70 + b"]" * 70 + b"]}"
    with pytest.raises(PayloadError) as info:
        inspect_json(deep)
    assert info.value.code == "json_too_deep"


MODEL_LAYOUTS = [
    b'{"x":{"model":"nested"},"model":"top"}',  # a nested key first
    b'{"role":"model","model":"top"}',  # "model" as a value first
    b'{"x\\"model":1,"model":"top"}',  # a key ending in an escaped quote and model
    b'{"t":"say \\"model\\"","model":"top"}',
    b'{"t":"end\\"model","model":"top"}',
    b'{"x":{"model":"nested"},"\\u006dodel":"top"}',  # the top-level key spelled with escapes
    b'{"\\u006dodel":"top","y":"model"}',
    b'{"messages":[{"content":"' + b"long text " * 5000 + b'"}],"model" : "top" }',
    b'{"model":"top","tools":[{"model":"x"}],"z":"model"}',
]


@pytest.mark.parametrize("body", MODEL_LAYOUTS, ids=lambda b: repr(b)[:40])
def test_the_top_level_model_is_the_one_spliced(body: bytes) -> None:
    facts = inspect_json(body)
    assert facts.model == "top"
    assert facts.model_span == _scan(body, 64)[1]
    assert facts.model_span is not None
    start, end = facts.model_span
    out = with_model(body, facts, "slug")
    assert out == body[:start] + b'"slug"' + body[end:]
    assert json.loads(out) == {**json.loads(body), "model": "slug"}


def _encode_with_duplicate(rng: random.Random, doc: dict[str, Any], chance: float) -> tuple[bytes, bool]:
    """Encode ``doc`` repeating one member of some objects (each with probability ``chance``)."""
    repeated = False

    def enc(v: Any) -> bytes:
        nonlocal repeated
        if isinstance(v, dict):
            members = [_encode_str(rng, k) + b":" + enc(x) for k, x in v.items()]
            if v and rng.random() < chance:
                key = rng.choice(list(v))
                members.insert(rng.randrange(len(members) + 1), _encode_str(rng, key) + b":" + enc(v[key]))
                repeated = True
            return b"{" + b",".join(members) + b"}"
        if isinstance(v, list):
            return b"[" + b",".join(enc(x) for x in v) + b"]"
        return _encode(rng, v)

    return enc(doc), repeated


@pytest.mark.parametrize("seed", range(3))
def test_random_duplicates_are_always_found(seed: int) -> None:
    rng = random.Random(7000 + seed)
    found = clean = 0
    for _ in range(300):
        doc = _object(rng, 1)
        doc.pop("model", None)
        doc.pop("stream", None)
        body, repeated = _encode_with_duplicate(rng, doc, 0.15)
        if repeated:
            with pytest.raises(PayloadError) as info:
                inspect_json(body)
            assert info.value.code in ("duplicate_key", "json_too_deep"), body
            found += 1
        else:
            assert inspect_json(body).members == len(doc)
            clean += 1
    assert found > 50 and clean > 50
