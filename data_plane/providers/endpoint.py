"""One native endpoint of one provider family, how a request to it maps upstream, what it answers.

Client text never reaches the upstream path: the path is the endpoint's fixed native
path, plus (Gemini only) the control plane's canonical slug, percent-encoded. The
client's query string is carried over minus anything that could steer authentication.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from data_plane.usage.shapes import NO_USAGE, Shape

BodyKind = Literal["json", "multipart", "none"]
ModelIn = Literal["body", "path", "form", "none"]
Streams = Literal["never", "body_flag", "always"]
# A parsed query (aiohttp's request.query, a MultiDict, or pairs) or a raw, still
# percent-encoded query string (request.rel_url.raw_query_string). Never a decoded one.
Query = Mapping[str, str] | Iterable[tuple[str, str]] | str | None

SLUG = "{slug}"
# Query parameters that authenticate or pick credentials somewhere (Google's key=,
# access_token=, oauth_token=; common api_key spellings). Compared case-insensitively.
AUTH_QUERY_PARAMS = frozenset(
    {"key", "$key", "api_key", "apikey", "api-key", "access_token", "oauth_token", "x-goog-api-key"}
)
# Characters a Gemini model id uses; everything else in a slug is percent-encoded.
_GEMINI_SLUG_SAFE = ""  # quote() always keeps A-Z a-z 0-9 _ . - ~


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A native route (aiohttp pattern) of one family and its upstream mapping."""

    family: int  # odock.v1.ProviderFamily
    method: str
    route: str  # aiohttp route pattern the data plane serves
    name: str  # stable id: default_models key and usage label
    body: BodyKind
    model_in: ModelIn
    streams: Streams
    # Native path appended to the model's base URL; may contain "{slug}" (model_in == "path").
    upstream_path: str
    # Suffix of the base URL's path to drop first (vLLM's base may end in "/v1").
    strip_base_suffix: str = ""
    path_param: str | None = field(default=None)
    # How its answers report usage (the shape object the relay and taps call through).
    usage: Shape = NO_USAGE
    # Whether it generates output tokens (limits reserve the output cap for it; embeddings,
    # tokenizers, pooling and scoring do not).
    output: bool = True
    # Whether the body's size estimates its input tokens for the limits (an audio upload's bytes are
    # not text: 25 MB would reserve millions of tokens for a request that uses a few thousand).
    body_is_text: bool = True

    @property
    def injectable(self) -> bool:
        """Whether its streams report usage only when asked, so the gateway asks (include_usage)."""
        return self.usage.injectable

    def model_from_path(self, match_info: Mapping[str, str]) -> str | None:
        """The model the client named in the URL path (lookup only, never forwarded), else None."""
        if self.model_in != "path" or self.path_param is None:
            return None
        value = match_info.get(self.path_param)
        if not value:
            return None
        # The google-genai SDK sends "models/x" unchanged when given it; aiohttp's default
        # pattern cannot match a raw "/", but an encoded one arrives decoded here.
        return value.removeprefix("models/")

    def upstream_url(self, base_url: str, slug: str, query: Query = None) -> str:
        """The upstream URL: base URL + native path (+ encoded slug) + the client's query minus auth."""
        templated = SLUG in self.upstream_path
        key = (self.upstream_path, self.strip_base_suffix, base_url, slug if templated else "")
        cached = _PREFIXES.get(key)
        if cached is None:
            path = self.upstream_path
            if templated:
                path = path.replace(SLUG, encode_gemini_slug(slug))
            cached = _url_prefix(base_url, path, self.strip_base_suffix)
            if len(_PREFIXES) >= _PREFIXES_MAX:
                _PREFIXES.clear()
            _PREFIXES[key] = cached
        prefix, base_query = cached
        return _with_query(prefix, base_query, filter_query(query) if query else "")


# (native path, suffix to strip, base URL, slug) -> (URL without query, the base URL's query):
# the same few routes serve every request, so the URL parsing runs once per route.
_PREFIXES: dict[tuple[str, str, str, str], tuple[str, str]] = {}
_PREFIXES_MAX = 4096


def encode_gemini_slug(slug: str) -> str:
    """Percent-encode a Gemini model slug for one path segment (a leading "models/" dropped)."""
    bare = slug.removeprefix("models/")
    if not bare:
        raise ValueError("empty Gemini model slug")
    return quote(bare, safe=_GEMINI_SLUG_SAFE)


def url_for_path(base_url: str, path: str, query: Query = None) -> str:
    """``base_url`` + ``path`` + the client's ``query`` minus authentication (uncached: for paths that
    vary per request, such as a provider object's id); ValueError for an unusable base URL."""
    prefix, base_query = _url_prefix(base_url, path, "")
    return _with_query(prefix, base_query, filter_query(query) if query else "")


def _url_prefix(base_url: str, path: str, strip_suffix: str) -> tuple[str, str]:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("base URL must be an absolute http(s) URL")
    base_path = parts.path.rstrip("/")
    if strip_suffix and base_path.endswith(strip_suffix):
        base_path = base_path[: -len(strip_suffix)]
    return urlunsplit((parts.scheme, parts.netloc, base_path + path, "", "")), parts.query


def _with_query(prefix: str, base_query: str, extra: str) -> str:
    query = f"{base_query}&{extra}" if base_query and extra else base_query or extra
    return f"{prefix}?{query}" if query else prefix


def filter_query(query: Query) -> str:
    """Re-encode a client query without authentication parameters."""
    if not query:
        return ""
    if isinstance(query, str):
        cached = _FILTERED.get(query)
        if cached is None:
            cached = urlencode(_without_auth(parse_qsl(query, keep_blank_values=True)), quote_via=quote)
            if len(query) <= _FILTERED_LEN_MAX:  # clients repeat the same few short queries ("alt=sse")
                if len(_FILTERED) >= _PREFIXES_MAX:
                    _FILTERED.clear()
                _FILTERED[query] = cached
        return cached
    pairs: Iterable[tuple[str, str]]
    if isinstance(query, Mapping):
        pairs = query.items()
    else:
        pairs = query
    return urlencode(_without_auth(pairs), quote_via=quote)


_FILTERED: dict[str, str] = {}
_FILTERED_LEN_MAX = 256


def _without_auth(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in pairs if k.strip().lower() not in AUTH_QUERY_PARAMS]
