"""key_digest: the digest of well-formed keys only, also once a key's form is remembered."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from data_plane import auth
from data_plane.errors import GatewayError
from odock import keyformat

PEPPER = b"p" * 32


def digest_of(key: str) -> bytes:
    return auth.key_digest(
        make_mocked_request("POST", "/", headers={"Authorization": f"Bearer {key}"}), PEPPER
    )


def test_remembered_form_never_admits_a_malformed_key() -> None:
    key = keyformat.generate()
    for _ in range(3):
        assert digest_of(key) == keyformat.digest(PEPPER, key)
    last = "A" if key[-1] != "A" else "B"
    for bad in (key[:-1] + last, key[:-1], key + "x", "odk-" + "0" * 49, key.upper()):
        with pytest.raises(GatewayError) as info:
            digest_of(bad)
        assert (info.value.status, info.value.code) == (401, "invalid_api_key")


def test_the_remembered_set_is_bounded() -> None:
    for _ in range(auth._WELL_FORMED_MAX + 10):
        digest_of(keyformat.generate())
    assert len(auth._WELL_FORMED) <= auth._WELL_FORMED_MAX
