"""Multipart parsing, randomised and adversarial: parse(serialize(parts)) == parts, in linear time.

Seeded ``random`` (as the JSON property tests) keeps failures reproducible. The timing
bounds are absolute and generous (a 2-core CI machine): every input here takes
milliseconds when parsing is linear and minutes to hours when it is quadratic.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from data_plane.payload import PayloadError, inspect_multipart, multipart_with_model
from data_plane.payload.multipart import MAX_HEADER_BYTES, MAX_PARTS, parse_header_value

ROUNDS = 300
_BCHARS = "0123456789abcXYZ'()+_,-./:=? "


@dataclass(frozen=True)
class Field:
    name: str
    headers: tuple[bytes, ...]  # extra header lines, as sent
    content: bytes


def _boundary(rng: random.Random) -> str:
    text = "".join(rng.choice(_BCHARS) for _ in range(rng.randint(1, 70)))
    return text[:-1] + rng.choice("abc-_")  # never ends in a space


def _content(rng: random.Random, dash: bytes) -> bytes:
    pieces = [b"\r\n", b"\n", b"\r", b"--", b"-", b"x", b"\x00\xff", "é".encode(), b"model", b"\r\n\r\n",
              dash[:-1], b"\r\n" + dash[:-1], b"\r\n--", b" \t", bytes(range(32))]  # fmt: skip
    return b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))


def _fields(rng: random.Random, dash: bytes) -> list[Field]:
    names = ["prompt", "image", "n", "x y", "é", 'q"uote', "model"]
    chosen = [rng.choice(names[:-1]) for _ in range(rng.randint(0, 6))]
    if rng.random() < 0.6:
        chosen.insert(rng.randint(0, len(chosen)), "model")
    fields = []
    for name in chosen:
        headers: tuple[bytes, ...] = ()
        if name != "model" and rng.random() < 0.5:
            headers = (b"Content-Type: application/octet-stream",)
        if rng.random() < 0.3:
            headers += (b"X-Pad:" + b" " * rng.randint(0, 300) + b"v" + b"\t" * rng.randint(0, 3),)
        content = _content(rng, dash) if name != "model" else rng.choice([b"", b"m", "mé/x".encode()])
        fields.append(Field(name, headers, content))
    return fields


def _quoted(name: str) -> bytes:
    return b'"' + name.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'


def serialize(fields: list[Field], boundary: str, rng: random.Random) -> bytes:
    """A valid multipart body for ``fields`` (optional preamble, transport padding and epilogue)."""
    dash = b"--" + boundary.encode()
    out = [rng.choice([b"", b"preamble\r\n", b"\r\n"])]
    for f in fields:
        padding = rng.choice([b"", b"", b" ", b" \t "])
        head = [b"Content-Disposition: form-data; name=" + _quoted(f.name), *f.headers]
        out += [dash, padding, b"\r\n", b"\r\n".join(head), b"\r\n\r\n", f.content, b"\r\n"]
    out += [dash, b"--", rng.choice([b"", b"\r\n", b"\r\nepilogue\r\n"])]
    return b"".join(out)


def _cases(seed: int) -> list[tuple[list[Field], bytes, str]]:
    rng = random.Random(seed)
    cases: list[tuple[list[Field], bytes, str]] = []
    while len(cases) < ROUNDS:
        boundary = _boundary(rng)
        dash = b"--" + boundary.encode()
        fields = _fields(rng, dash)
        if any(dash in f.content for f in fields):
            continue  # a part may not contain its own delimiter
        body = serialize(fields, boundary, rng)
        cases.append((fields, body, f'multipart/form-data; boundary="{boundary}"'))
    return cases


def test_parse_of_serialize_gives_back_every_part() -> None:
    for fields, body, content_type in _cases(11):
        facts = inspect_multipart(body, content_type)
        # Header bytes are read as latin-1 (the name only ever has to equal "model").
        got = [(p.name.encode("latin-1"), body[p.content_start : p.content_end]) for p in facts.parts]
        assert got == [(f.name.encode(), f.content) for f in fields]
        model = next((f.content for f in fields if f.name == "model"), None)
        assert facts.model == (None if model is None else model.decode())


def test_rewrite_changes_only_the_model_value() -> None:
    rng = random.Random(5)
    for fields, body, content_type in _cases(12):
        facts = inspect_multipart(body, content_type)
        slug = rng.choice(["s", "org/model-é", ""])
        out = multipart_with_model(body, facts, slug)
        again = inspect_multipart(out, content_type)
        assert again.model == slug
        if facts.model_part is not None:
            part = facts.model_part
            assert out == body[: part.content_start] + slug.encode() + body[part.content_end :]
            assert len(again.parts) == len(facts.parts)
        else:
            assert out.endswith(body[facts.first_delimiter :]) and len(again.parts) == len(facts.parts) + 1
        kept = [out[p.content_start : p.content_end] for p in again.parts if p.name != "model"]
        assert kept == [f.content for f in fields if f.name != "model"]


def _timed(call: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    try:
        result: object = call()
    except PayloadError as exc:
        result = exc
    return time.perf_counter() - started, result


def _part(name: bytes, content: bytes, extra: bytes = b"") -> bytes:
    return (
        b'--b\r\nContent-Disposition: form-data; name="'
        + name
        + b'"'
        + extra
        + b"\r\n\r\n"
        + content
        + b"\r\n"
    )


CT = "multipart/form-data; boundary=b"
BOUNDARY70 = "B" * 69 + "z"
CT70 = f"multipart/form-data; boundary={BOUNDARY70}"
_SPACE_LINE = b"\r\nX-Pad: a" + b" " * 8000 + b"b"  # near the header bound: linear or it takes seconds
ADVERSARIAL: dict[str, tuple[bytes, str]] = {
    "64 KB header line": (_part(b"p", b"x", b"\r\nX-Pad: a" + b" " * 64_000 + b"b") + b"--b--", CT),
    "1 MB header line": (_part(b"p", b"x", b"\r\nX-Pad: a" + b" " * 1_000_000 + b"b") + b"--b--", CT),
    "1000 parts with 8 KB blank-padded headers": (_part(b"p", b"x", _SPACE_LINE) * MAX_PARTS + b"--b--", CT),
    "4 MB of CRLFs in a part": (_part(b"p", b"\r\n" * 2_000_000) + b"--b--", CT),
    "4 MB of CRLFs as headers": (b"--b\r\n" + b"\r\n" * 2_000_000, CT),
    "8 MB of boundary lookalikes": (
        b"--" + BOUNDARY70.encode() + b'\r\nContent-Disposition: form-data; name="f"\r\n\r\n'
        + (b"\r\n--" + BOUNDARY70[:-1].encode() + b"y") * 110_000
        + b"\r\n--" + BOUNDARY70.encode() + b"--",
        CT70,
    ),
    "a million tiny parts": (_part(b"p", b"") * 1_000_000 + b"--b--", CT),
    "4 MB of transport padding": (b"--b" + b" " * 4_000_000 + b"\r\n", CT),
    "many CR-LF-dash lookalikes": ((b"\r\n--b" + b"\r\n-") * 1_000_000, CT),
}  # fmt: skip


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_bodies_parse_in_linear_time(name: str) -> None:
    body, content_type = ADVERSARIAL[name]
    took, _result = _timed(lambda: inspect_multipart(body, content_type))
    assert took < 1.5, f"{name}: {took:.2f} s for {len(body)} bytes"


def test_a_header_block_over_the_bound_is_a_clear_400() -> None:
    for name in ("64 KB header line", "1 MB header line"):
        with pytest.raises(PayloadError) as info:
            inspect_multipart(*ADVERSARIAL[name])
        assert info.value.code == "invalid_multipart" and info.value.status == 400
        assert (
            info.value.message
            == f"malformed multipart body: a part's header block exceeds {MAX_HEADER_BYTES} bytes"
        )


def test_the_header_bound_is_exact() -> None:
    head = b'Content-Disposition: form-data; name="p"\r\nX-Pad: '
    for size, ok in ((MAX_HEADER_BYTES, True), (MAX_HEADER_BYTES + 1, False)):
        block = head + b"v" * (size - len(head))
        body = b"--b\r\n" + block + b"\r\n\r\nx\r\n--b--"
        _took, result = _timed(lambda body=body: inspect_multipart(body, CT))  # type: ignore[misc]
        assert isinstance(result, PayloadError) != ok, (size, result)


def test_the_part_bound_is_exact() -> None:
    assert len(inspect_multipart(_part(b"p", b"") * MAX_PARTS + b"--b--", CT).parts) == MAX_PARTS
    with pytest.raises(PayloadError, match=f"more than {MAX_PARTS} parts"):
        inspect_multipart(_part(b"p", b"") * (MAX_PARTS + 1) + b"--b--", CT)


@pytest.mark.parametrize(
    "value",
    [
        "multipart/form-data; a" + " " * 8000 + "b",
        "multipart/form-data; a=" + '"' + "\\" * 8000,
        "multipart/form-data" + "; a=b" * 1600,
        "multipart/form-data; " + "a" * 8000,
        "multipart/form-data;" + " ;" * 4000 + "x",
    ],
)
def test_header_parameters_parse_in_linear_time(value: str) -> None:
    took, _result = _timed(lambda: parse_header_value(value))
    assert took < 0.5, f"{took:.2f} s"
