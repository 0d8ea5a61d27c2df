"""Assertions about what the fake provider received."""

from __future__ import annotations

from urllib.parse import urlsplit

from tests.fakes.provider import PREFIXES, FakeProvider, RecordedRequest
from tests.support.provision import Provisioned

TEXT = "piece0 piece1 piece2 "  # what the fake generates with its default three pieces
_AUTH_HEADERS = ("authorization", "x-api-key", "x-goog-api-key", "api-key")


def prefix(fake: FakeProvider, family: str) -> str:
    """The path prefix the fake serves ``family`` under (its base URL's path, minus openai's /v1)."""
    assert urlsplit(fake.base_url(family)).path.startswith(PREFIXES[family])
    return PREFIXES[family]


def only_request(fake: FakeProvider) -> RecordedRequest:
    """The single request the fake received."""
    assert len(fake.requests) == 1, [r.raw_path[:200] for r in fake.requests]
    return fake.requests[0]


def assert_provider_auth(fake: FakeProvider, rec: RecordedRequest, family: str) -> None:
    """The provider key sits in the family's header, and no other auth header or ?key= is sent."""
    secret = fake.secret(family)
    expected = {"openai": ("authorization", f"Bearer {secret}"), "vllm": ("authorization", f"Bearer {secret}"),
                "anthropic": ("x-api-key", secret), "gemini": ("x-goog-api-key", secret)}[family]
    present = {h.lower(): rec.headers.getall(h) for h in rec.headers if h.lower() in _AUTH_HEADERS}
    assert present == {expected[0]: [expected[1]]}
    assert "key" not in rec.query


def assert_no_virtual_key(rec: RecordedRequest, key: str) -> None:
    """No trace of the virtual key (or its random body) in the path, query, headers or body."""
    needles = (key, key[4:-6])
    blobs = [rec.raw_path.encode(), rec.body] + [f"{k}: {v}".encode() for k, v in rec.headers.items()]
    for blob in blobs:
        for needle in needles:
            assert needle.encode() not in blob


def assert_forwarded(fake: FakeProvider, org: Provisioned, *, family: str, path: str,
                     model: str | None) -> RecordedRequest:
    """Exactly one upstream request, to ``prefix + path``, with the model's slug and the provider key."""
    rec = only_request(fake)
    assert rec.family == family
    assert rec.path == prefix(fake, family) + path, rec.raw_path[:300]
    if model is not None:
        assert rec.model == org.slug(model)
    assert_provider_auth(fake, rec, family)
    assert_no_virtual_key(rec, org.key)
    return rec
