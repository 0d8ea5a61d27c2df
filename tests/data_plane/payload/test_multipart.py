"""inspect_multipart / multipart_with_model: strict parsing, only the model field's bytes change."""

from __future__ import annotations

import os
import random

import httpx
import pytest

from data_plane.payload import PayloadError, inspect_multipart, multipart_with_model
from data_plane.payload.multipart import boundary_of

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8 + b"\r\n--not-the-boundary\r\n\r\n"


def sdk_body(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """A multipart body exactly as httpx (the OpenAI SDK's transport) encodes it."""
    request = httpx.Request("POST", "http://x/v1/images/edits", data=fields, files=files)
    return request.read(), request.headers["content-type"]


def with_model(body: bytes, content_type: str, slug: str) -> bytes:
    """Parse once, then rewrite from those facts (as the gateway does)."""
    return multipart_with_model(body, inspect_multipart(body, content_type), slug)


def parts(body: bytes, boundary: bytes) -> list[bytes]:
    """Independent split on CRLF--boundary (preamble and close delimiter dropped), to compare parts."""
    pieces = (b"\r\n" + body).split(b"\r\n--" + boundary)
    assert pieces[-1].startswith(b"--")
    return pieces[1:-1]


def test_sdk_body_model_found_and_rewritten_with_file_parts_untouched() -> None:
    body, content_type = sdk_body(
        {"prompt": "a cat", "model": "my-image-model", "n": "2"},
        {"image": ("cat.png", PNG, "image/png"), "mask": ("mask.png", PNG[::-1], "image/png")},
    )
    assert inspect_multipart(body, content_type).model == "my-image-model"
    out = with_model(body, content_type, "gpt-image-1")
    assert inspect_multipart(out, content_type).model == "gpt-image-1"
    assert out == body.replace(b"\r\n\r\nmy-image-model\r\n", b"\r\n\r\ngpt-image-1\r\n")
    boundary = boundary_of(content_type)
    before, after = parts(body, boundary), parts(out, boundary)
    assert len(before) == len(after) == 5
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert len(changed) == 1 and b'name="model"' in before[changed[0]]
    assert PNG in out and PNG[::-1] in out


def test_missing_model_is_added_as_first_part() -> None:
    body, content_type = sdk_body({"prompt": "a cat"}, {"image": ("cat.png", PNG, "image/png")})
    assert inspect_multipart(body, content_type).model is None
    out = with_model(body, content_type, "dall-e-2")
    boundary = boundary_of(content_type)
    added = b"--" + boundary + b'\r\nContent-Disposition: form-data; name="model"\r\n\r\ndall-e-2\r\n'
    assert out == added + body
    assert inspect_multipart(out, content_type).model == "dall-e-2"


def test_quoted_boundary_preamble_padding_and_epilogue() -> None:
    boundary = "weird'()+_,-./:=? b"
    content_type = f'multipart/form-data; charset=utf-8; boundary="{boundary}"'
    dash = b"--" + boundary.encode()
    body = (
        b"preamble to ignore\r\n"
        + dash + b" \t\r\n"
        + b'content-disposition: form-data; name="file"; filename="a.wav"\r\n'
        + b"Content-Type: audio/wav\r\n\r\n"
        + b"RIFF\x00\x01model\r\n\r\n"
        + b"\r\n" + dash + b"\r\n"
        + b'CONTENT-DISPOSITION: Form-Data ; name = "model" \r\n\r\n'
        + b"whisper-\xc3\xa9"
        + b"\r\n" + dash + b"--\r\nepilogue\r\n"
    )  # fmt: skip
    assert inspect_multipart(body, content_type).model == "whisper-\u00e9"
    out = with_model(body, content_type, "openai/whisper-large-v3")
    assert out == body.replace(b"whisper-\xc3\xa9", b"openai/whisper-large-v3")


def test_empty_model_value_and_unquoted_boundary() -> None:
    body = b'--abc\r\nContent-Disposition: form-data; name="model"\r\n\r\n\r\n--abc--\r\n'
    assert inspect_multipart(body, "multipart/form-data;boundary=abc").model == ""
    out = with_model(body, "multipart/form-data;boundary=abc", "m")
    assert out == b'--abc\r\nContent-Disposition: form-data; name="model"\r\n\r\nm\r\n--abc--\r\n'


def test_model_added_after_a_preamble_and_into_an_empty_form() -> None:
    body = b"pre\r\n--b\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--b--"
    out = with_model(body, "multipart/form-data; boundary=b", "m")
    assert out == (
        b'pre\r\n--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nm\r\n'
        b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--b--"
    )
    out = with_model(b"--b--\r\n", "multipart/form-data; boundary=b", "m")
    assert inspect_multipart(out, "multipart/form-data; boundary=b").model == "m"


CT = "multipart/form-data; boundary=xyz"


def field(name: str, value: bytes, extra: bytes = b"") -> bytes:
    return (
        b'--xyz\r\nContent-Disposition: form-data; name="'
        + name.encode()
        + b'"'
        + extra
        + b"\r\n\r\n"
        + value
        + b"\r\n"
    )


MALFORMED: list[tuple[bytes, str, str]] = [
    (field("model", b"a") + field("model", b"b") + b"--xyz--", CT, "duplicate_key"),
    (field("model", b"a") + field("x", b"1") + field("model", b"a") + b"--xyz--", CT, "duplicate_key"),
    (field("model", b"a"), CT, "invalid_multipart"),  # no close delimiter
    (b"", CT, "invalid_multipart"),
    (b"no boundary here", CT, "invalid_multipart"),
    (field("model", b"a") + b"--xyz--", "multipart/form-data", "invalid_multipart"),
    (field("model", b"a") + b"--xyz--", "application/json", "invalid_multipart"),
    (field("model", b"a") + b"--xyz--", 'multipart/form-data; boundary="x"; boundary="y"', "invalid_multipart"),
    (field("model", b"a") + b"--xyz--", "multipart/form-data; boundary=" + "b" * 71, "invalid_multipart"),
    (field("model", b"a") + b"--xyz--", 'multipart/form-data; boundary="a b "', "invalid_multipart"),
    (field("model", b"a") + b"--xyz--", "multipart/form-data; boundary", "invalid_multipart"),
    (b"--xyz\nContent-Disposition: form-data; name=\"model\"\n\na\n--xyz--", CT, "invalid_multipart"),
    (field("x", b"1\n--xyz\r\nsmuggled") + b"--xyz--", CT, "invalid_multipart"),  # bare-LF delimiter
    (field("model", b"a") + b"--xyzjunk\r\n", CT, "invalid_multipart"),
    (b"--xyz\r\nContent-Type: text/plain\r\n\r\na\r\n--xyz--", CT, "invalid_multipart"),  # no disposition
    (b"--xyz\r\n\r\na\r\n--xyz--", CT, "invalid_multipart"),  # no headers at all
    (field("model", b"a", b"\r\nContent-Disposition: form-data; name=\"x\"") + b"--xyz--", CT, "invalid_multipart"),
    (b'--xyz\r\nContent-Disposition: form-data; name="model"\r\n folded\r\n\r\na\r\n--xyz--', CT, "invalid_multipart"),
    (b'--xyz\r\nContent-Disposition: attachment; name="model"\r\n\r\na\r\n--xyz--', CT, "invalid_multipart"),
    (b"--xyz\r\nContent-Disposition: form-data; name*=utf-8''model\r\n\r\na\r\n--xyz--", CT, "invalid_multipart"),
    (b'--xyz\r\nContent-Disposition: form-data; name="model\r\n\r\na\r\n--xyz--', CT, "invalid_multipart"),
    (field("model", b"a", b'; filename="m.txt"') + b"--xyz--", CT, "invalid_model"),
    (field("model", b"YQ==", b"\r\nContent-Transfer-Encoding: base64") + b"--xyz--", CT, "invalid_model"),
    (field("model", b"\xff") + b"--xyz--", CT, "invalid_model"),
    (b"--xyz\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n--xyz--", CT, "invalid_multipart"),
    (field("x", b"1") * 1001 + b"--xyz--", CT, "invalid_multipart"),
    (b"pre --xyz\r\n" + field("model", b"a") + b"--xyz--", CT, "invalid_multipart"),  # boundary in preamble
    (field("model", b"a") + b"--xyz--\r\n" + field("model", b"b") + b"--xyz--", CT, "invalid_multipart"),
    (b"--xyz" + b" " * 1_000_000 + b"x", CT, "invalid_multipart"),  # long padding, no CRLF
]  # fmt: skip


@pytest.mark.parametrize(("body", "content_type", "code"), MALFORMED, ids=lambda v: repr(v)[:50])
def test_malformed_bodies_are_refused(body: bytes, content_type: str, code: str) -> None:
    for call in (
        lambda: inspect_multipart(body, content_type),
        lambda: with_model(body, content_type, "s"),
    ):
        with pytest.raises(PayloadError) as info:
            call()
        assert info.value.code == code and info.value.status == 400
        assert len(info.value.message) < 120


def test_slug_that_would_break_the_body_is_refused() -> None:
    body = field("model", b"a") + b"--xyz--"
    for slug in ("a\r\nb", "x--xyz", "\n"):
        with pytest.raises(ValueError):
            with_model(body, CT, slug)


def test_randomised_bodies_keep_every_other_part_identical() -> None:
    rng = random.Random(7)
    for _ in range(150):
        files = {
            f"file{i}": (f"f{i}.bin", os.urandom(rng.randint(0, 3000)), "application/octet-stream")
            for i in range(rng.randint(1, 3))  # without a file httpx would urlencode
        }
        fields = {f"f{i}": rng.choice(["", "x", "é", "a\r\nb", "--"]) for i in range(rng.randint(0, 3))}
        if rng.random() < 0.6:
            fields["model"] = rng.choice(["m", "model-é", "a/b"])
        body, content_type = sdk_body(fields, files)
        assert inspect_multipart(body, content_type).model == fields.get("model")
        out = with_model(body, content_type, "slug-1")
        assert inspect_multipart(out, content_type).model == "slug-1"
        boundary = boundary_of(content_type)
        before = [p for p in parts(body, boundary) if b'name="model"' not in p.split(b"\r\n\r\n")[0]]
        after = [p for p in parts(out, boundary) if b'name="model"' not in p.split(b"\r\n\r\n")[0]]
        assert before == after
        for _, data, _ in files.values():
            assert data in out
