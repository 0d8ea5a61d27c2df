"""Randomised checks: inspect_json agrees with a strict reference parser; splices are byte-exact."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from data_plane.payload import PayloadError, inspect_json, with_model

ROUNDS = 400
_CHARS = 'ab "\\/\n\t\x01é\u2028\U0001f600{}[],:model'
_WS = [b"", b"", b" ", b"\t", b"\r\n", b"\n  "]


def _string(rng: random.Random) -> str:
    return "".join(rng.choice(_CHARS) for _ in range(rng.randint(0, 8)))


def _value(rng: random.Random, depth: int) -> Any:
    kind = rng.randint(0, 9 if depth < 6 else 5)
    if kind == 0:
        return rng.randint(-(2**70), 2**70)
    if kind == 1:
        return rng.uniform(-1e6, 1e6)
    if kind == 2:
        return rng.choice([True, False, None])
    if kind <= 5:
        return _string(rng)
    if kind <= 7:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return _object(rng, depth + 1)


def _object(rng: random.Random, depth: int) -> dict[str, Any]:
    keys = {rng.choice(["model", "stream", "a", "b", "é", 'm"odel', _string(rng)]) for _ in range(4)}
    return {k: _value(rng, depth) for k in keys}


def _encode_str(rng: random.Random, s: str) -> bytes:
    out = ['"']
    for c in s:
        if c in '"\\' or ord(c) < 0x20:
            out.append(json.dumps(c)[1:-1] if rng.random() < 0.5 else f"\\u{ord(c):04x}")
        elif ord(c) > 0xFFFF and rng.random() < 0.5:
            hi, lo = divmod(ord(c) - 0x10000, 0x400)
            out.append(f"\\u{0xD800 + hi:04x}\\u{0xDC00 + lo:04X}")
        elif rng.random() < 0.1:
            out.append(f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else c)
        elif c == "/" and rng.random() < 0.5:
            out.append("\\/")
        else:
            out.append(c)
    out.append('"')
    return "".join(out).encode()


def _encode(rng: random.Random, v: Any) -> bytes:
    def ws() -> bytes:
        return rng.choice(_WS)

    if isinstance(v, dict):
        members = [
            ws() + _encode_str(rng, k) + ws() + b":" + ws() + _encode(rng, x) + ws() for k, x in v.items()
        ]
        return b"{" + b",".join(members) + ws() + b"}"
    if isinstance(v, list):
        return b"[" + b",".join(ws() + _encode(rng, x) + ws() for x in v) + ws() + b"]"
    if isinstance(v, str):
        return _encode_str(rng, v)
    return json.dumps(v).encode()


def _reference(body: bytes, max_depth: int = 64) -> tuple[Any, Any] | None:
    """Strict stdlib parse: (model, stream), or None when the gateway must refuse the body."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate")
        return dict(items)

    def constant(name: str) -> Any:
        raise ValueError(name)

    def check(v: Any, depth: int) -> None:
        if depth > max_depth:
            raise ValueError("deep")
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("inf")
        if isinstance(v, str):
            v.encode("utf-8")  # lone surrogates from \\ud800 escapes fail here
        children = list(v.items()) if isinstance(v, dict) else (enumerate(v) if isinstance(v, list) else [])
        for k, x in children:
            check(k, depth)
            check(x, depth + 1 if isinstance(x, dict | list) else depth)

    try:
        doc = json.loads(body.decode("utf-8"), object_pairs_hook=pairs, parse_constant=constant)
        check(doc, 1)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    model, stream = doc.get("model"), doc.get("stream")
    if model is not None and not isinstance(model, str):
        return None
    if stream is not None and not isinstance(stream, bool):
        return None
    return model, stream


@pytest.mark.parametrize("seed", range(4))
def test_random_documents_round_trip_and_splice_exactly(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(ROUNDS):
        doc = _object(rng, 1)
        if isinstance(doc.get("model"), list | dict | int | float | bool):
            doc["model"] = _string(rng)
        if "stream" in doc:
            doc["stream"] = rng.choice([True, False, None])
        body = rng.choice(_WS) + _encode(rng, doc) + rng.choice(_WS)
        facts = inspect_json(body)
        assert (facts.model, facts.stream) == (doc.get("model"), doc.get("stream"))
        slug = _string(rng) or "s"
        out = with_model(body, facts, slug)
        assert json.loads(out) == {**doc, "model": slug}
        if facts.model_span is not None:
            start, end = facts.model_span
            tail = len(body) - end
            assert out[:start] == body[:start] and out[len(out) - tail :] == body[end:]
        else:
            at = facts.object_start + 1
            assert out[:at] == body[:at] and out.endswith(body[at:])
        assert inspect_json(out).model == slug


_MUTATIONS = [
    b'"',
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"N",
    b"\xff",
    b"\xed",
    b"1",
    b"e",
    b"-",
    b" ",
    b"u",
]


@pytest.mark.parametrize("seed", range(4))
def test_mutated_bodies_agree_with_the_strict_reference(seed: int) -> None:
    rng = random.Random(1000 + seed)
    accepted = refused = 0
    for _ in range(ROUNDS * 2):
        body = bytearray(_encode(rng, _object(rng, 1)))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(body) + 1)
            op = rng.randint(0, 2)
            if op == 0:
                body[at:at] = rng.choice(_MUTATIONS)
            elif op == 1 and at < len(body):
                del body[at]
            elif at < len(body):
                body[at : at + 1] = rng.choice(_MUTATIONS)
        raw = bytes(body)
        expected = _reference(raw)
        try:
            facts = inspect_json(raw)
        except PayloadError as exc:
            assert expected is None, (raw, exc)
            refused += 1
            continue
        assert expected == (facts.model, facts.stream), raw
        accepted += 1
    assert accepted > 20 and refused > 20  # the mutations exercised both sides
