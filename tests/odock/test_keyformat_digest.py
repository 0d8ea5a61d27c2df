"""keyformat.digest: the stored keyed hash is HMAC-SHA256 of the key, whatever the pepper (the
keyed object it copies is a cache, never a different function)."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from odock import keyformat


@given(pepper=st.binary(min_size=1, max_size=100), key=st.text(max_size=80))
def test_digest_is_hmac_sha256_of_the_utf8_key(pepper: bytes, key: str) -> None:
    expected = hmac.new(pepper, key.encode("utf-8"), hashlib.sha256).digest()
    assert keyformat.digest(pepper, key) == expected
    assert keyformat.digest(pepper, key) == expected  # the second call copies the cached keyed state


def test_peppers_never_share_a_keyed_state() -> None:
    key = keyformat.generate()
    digests = {keyformat.digest(bytes([i]) * 32, key) for i in range(20)}  # past the cache's bound too
    assert len(digests) == 20
    assert keyformat.digest(b"\x03" * 32, key) == hmac.new(b"\x03" * 32, key.encode(), "sha256").digest()
