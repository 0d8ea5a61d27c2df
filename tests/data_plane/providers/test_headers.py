"""Headers sent upstream: client auth and hop-by-hop gone, provider key set, the rest kept."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from data_plane.providers import DIALECTS
from data_plane.providers.headers import build_headers
from odock.v1 import common_pb2

OPENAI = common_pb2.PROVIDER_FAMILY_OPENAI
ANTHROPIC = common_pb2.PROVIDER_FAMILY_ANTHROPIC
GEMINI = common_pb2.PROVIDER_FAMILY_GEMINI
VLLM = common_pb2.PROVIDER_FAMILY_VLLM
VIRTUAL_KEY = "odk-" + "A" * 49


def client_headers() -> CIMultiDict[str]:
    return CIMultiDict(
        [
            ("Host", "gateway.example"),
            ("Content-Type", "application/json"),
            ("Content-Length", "123"),
            ("Accept", "text/event-stream"),
            ("Accept-Encoding", "gzip, br"),
            ("User-Agent", "OpenAI/Python 1.2.3"),
            ("Authorization", f"Bearer {VIRTUAL_KEY}"),
            ("x-api-key", VIRTUAL_KEY),
            ("X-Goog-Api-Key", VIRTUAL_KEY),
            ("api-key", VIRTUAL_KEY),
            ("Cookie", "session=abc"),
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("X-Secret-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "x"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "h2c"),
            ("Expect", "100-continue"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Forwarded-Host", "evil.example"),
            ("Forwarded", "for=10.0.0.1"),
            ("X-Real-IP", "10.0.0.1"),
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "prompt-caching-2024-07-31"),
            ("anthropic-beta", "output-128k-2025-02-19"),
            ("OpenAI-Beta", "assistants=v2"),
            ("OpenAI-Organization", "org-other"),
            ("OpenAI-Project", "proj-other"),
            ("x-goog-user-project", "other-project"),
            ("x-goog-api-client", "google-genai-sdk/1.0"),
            ("X-Stainless-Lang", "python"),
            ("x-request-id", "req-1"),
        ]
    )


KEPT = {
    "content-type": "application/json",
    "accept": "text/event-stream",
    "user-agent": "OpenAI/Python 1.2.3",
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "prompt-caching-2024-07-31, output-128k-2025-02-19",
    "openai-beta": "assistants=v2",
    "x-goog-api-client": "google-genai-sdk/1.0",
    "x-stainless-lang": "python",
    "x-request-id": "req-1",
}


@pytest.mark.parametrize(
    ("family", "auth_name", "auth_value", "family_dropped"),
    [
        (OPENAI, "authorization", "Bearer sk-provider", {"openai-organization", "openai-project"}),
        (VLLM, "authorization", "Bearer sk-provider", set()),
        (ANTHROPIC, "x-api-key", "sk-provider", set()),
        (GEMINI, "x-goog-api-key", "sk-provider", {"x-goog-user-project"}),
    ],
)
def test_filtering_and_provider_auth(
    family: int, auth_name: str, auth_value: str, family_dropped: set[str]
) -> None:
    out = build_headers(DIALECTS[family], client_headers(), b"sk-provider")
    lowered = {k.lower(): v for k, v in out.items()}
    assert len(lowered) == len(out)  # no name twice in different cases
    assert lowered.pop(auth_name) == auth_value
    assert lowered.pop("accept-encoding") == "identity"  # never the client's: usage is read from bodies
    assert lowered.pop("x-odock-hop") == "1"  # every forwarded request is marked: a gateway refuses it
    for name, value in KEPT.items():
        assert lowered.pop(name) == value
    kept_family_specific = {"openai-organization", "openai-project", "x-goog-user-project"} - family_dropped
    for name in kept_family_specific:
        lowered.pop(name)
    assert lowered == {}
    assert VIRTUAL_KEY not in repr(out)


def test_anthropic_version_defaulted_only_when_absent() -> None:
    out = build_headers(DIALECTS[ANTHROPIC], {"Content-Type": "application/json"}, "k")
    assert out == {"Content-Type": "application/json", "anthropic-version": "2023-06-01",
                   "Accept-Encoding": "identity", "x-odock-hop": "1", "x-api-key": "k"}
    out = build_headers(DIALECTS[ANTHROPIC], {"Anthropic-Version": "2024-01-01"}, "k")
    assert out == {"Anthropic-Version": "2024-01-01", "Accept-Encoding": "identity", "x-odock-hop": "1",
                   "x-api-key": "k"}


def test_a_client_hop_header_is_never_forwarded_as_sent() -> None:
    out = build_headers(DIALECTS[OPENAI], {"X-Odock-Hop": "0", "x-odock-hop": "7"}, "k")
    assert [(k, v) for k, v in out.items() if k.lower() == "x-odock-hop"] == [("x-odock-hop", "1")]


def test_accepts_pairs_and_plain_mappings() -> None:
    assert build_headers(DIALECTS[VLLM], [("Accept", "a"), ("accept", "b")], "k") == {
        "Accept": "a, b",
        "Accept-Encoding": "identity",
        "x-odock-hop": "1",
        "Authorization": "Bearer k",
    }


@pytest.mark.parametrize("secret", ["", "sk\r\nX-Injected: 1", "sk\n", b"", "a\x00b"])
def test_secret_that_is_no_header_value_is_refused_without_echo(secret: str | bytes) -> None:
    with pytest.raises(ValueError) as info:
        build_headers(DIALECTS[OPENAI], {}, secret)
    assert "sk" not in str(info.value) and "Injected" not in str(info.value)
