"""Request-field validation. Each check raises InvalidArgument naming the field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from urllib.parse import urlsplit

from google.protobuf.duration_pb2 import Duration

from control_plane.errors import InvalidArgument
from odock import baseurl, keyformat
from odock.v1 import common_pb2

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")
MAX_LABELS = 64
MAX_LABEL_VALUE = 256
MAX_MODEL_NAME = 256
MAX_SLUG = 256
MAX_URL = 2048
MAX_SECRET_BYTES = 8192
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
DEFAULT_TIMEOUT = timedelta(seconds=60)
MIN_TIMEOUT = timedelta(milliseconds=100)
MAX_TIMEOUT = timedelta(seconds=3600)
MAX_GRACE = timedelta(days=30)
_FAMILIES = frozenset(
    v for v in common_pb2.ProviderFamily.values() if v != common_pb2.PROVIDER_FAMILY_UNSPECIFIED
)
_POLICIES = frozenset(common_pb2.OutagePolicy.values())


def name(field: str, value: str) -> str:
    """An org, credential, key or token name: ``[a-z0-9][a-z0-9._-]{0,62}``."""
    if not value:
        raise InvalidArgument(field, "required")
    if not NAME_RE.match(value):
        raise InvalidArgument(
            field, "must be 1-63 characters of a-z, 0-9, '.', '_', '-' starting with a letter or digit"
        )
    return value


def model_name(field: str, value: str) -> str:
    """1..256 printable characters without '/', '?', '#' or whitespace."""
    if not value:
        raise InvalidArgument(field, "required")
    if len(value) > MAX_MODEL_NAME:
        raise InvalidArgument(field, f"must be at most {MAX_MODEL_NAME} characters")
    if any(c in "/?#" or c.isspace() or not c.isprintable() for c in value):
        raise InvalidArgument(field, "must not contain '/', '?', '#', whitespace or control characters")
    return value


def slug(field: str, value: str) -> str:
    """An upstream model slug: required, printable, no whitespace."""
    if not value:
        raise InvalidArgument(field, "required")
    if len(value) > MAX_SLUG or any(c.isspace() or not c.isprintable() for c in value):
        raise InvalidArgument(field, f"must be at most {MAX_SLUG} printable characters without whitespace")
    return value


def base_url(field: str, value: str) -> str:
    """An http(s) URL with a host and no userinfo, query or fragment."""
    if not value:
        raise InvalidArgument(field, "required")
    if len(value) > MAX_URL or any(c.isspace() or not c.isprintable() for c in value):
        raise InvalidArgument(field, "must be a URL without whitespace or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise InvalidArgument(field, "is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidArgument(field, "scheme must be http or https")
    if "@" in parts.netloc:
        raise InvalidArgument(field, "must not contain userinfo (put secrets in a credential)")
    if not parts.hostname:
        raise InvalidArgument(field, "host is required")
    try:  # what both planes' resolvers do to a name first; "a..b" or a 64-character label fails it
        parts.hostname.encode("idna")
    except UnicodeError:
        raise InvalidArgument(field, "host is not a valid host name") from None
    if port == 0:
        raise InvalidArgument(field, "port must be 1-65535")
    if parts.query or "?" in value:
        raise InvalidArgument(field, "must not contain a query")
    if parts.fragment or "#" in value:
        raise InvalidArgument(field, "must not contain a fragment")
    return value


MAX_CA_BUNDLE = 64 * 1024


def proxy_url(field: str, value: str) -> str:
    """A deployment's proxy: "", "direct" or ``http://[user:pass@]host:port`` (no path, query or fragment)."""
    if value in ("", "direct"):
        return value
    if len(value) > MAX_URL or any(c.isspace() or not c.isprintable() for c in value):
        raise InvalidArgument(field, "must be a URL without whitespace or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise InvalidArgument(field, "is not a valid proxy URL (http://[user:password@]host:port)") from None
    if parts.scheme == "https":
        raise InvalidArgument(
            field, "https proxies are not supported; use http:// (https upstreams go through CONNECT)"
        )
    if parts.scheme != "http":
        raise InvalidArgument(field, 'must be "", "direct" or http://[user:password@]host:port')
    if not parts.hostname:
        raise InvalidArgument(field, "host is required")
    try:
        parts.hostname.encode("idna")
    except UnicodeError:
        raise InvalidArgument(field, "host is not a valid host name") from None
    if port is None or port == 0:
        raise InvalidArgument(field, "port is required (1-65535), e.g. http://proxy:3128")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "?" in value or "#" in value:
        raise InvalidArgument(field, "must not contain a path, query or fragment")
    if "@" in parts.netloc and parts.username is None:
        raise InvalidArgument(field, "is not a valid proxy URL (http://[user:password@]host:port)")
    return value.rstrip("/")


def has_password(value: str) -> bool:
    """Whether a (validated) proxy URL carries a password."""
    return "@" in value and urlsplit(value).password is not None


def ca_bundle(field: str, value: str) -> str:
    """PEM certificates: at most 64 KiB, at least one certificate that parses."""
    if not value:
        return value
    if len(value.encode("utf-8")) > MAX_CA_BUNDLE:
        raise InvalidArgument(field, f"must be at most {MAX_CA_BUNDLE} bytes")
    # Imported here: only model writes with a CA bundle need it.
    from cryptography.x509 import load_pem_x509_certificates

    try:
        certs = load_pem_x509_certificates(value.encode("utf-8"))
    except ValueError:
        raise InvalidArgument(field, "must be PEM certificates (-----BEGIN CERTIFICATE-----)") from None
    if not certs:
        raise InvalidArgument(field, "holds no certificate")
    return value


def base_url_convention(field: str, value: str, family_value: int) -> None:
    """Refuse a base URL that cannot work for ``family`` (odock.baseurl; the message says how to fix it)."""
    problem = baseurl.convention_problem(value, family_value)
    if problem is not None:
        raise InvalidArgument(field, problem)


def family(field: str, value: int) -> int:
    """A known provider family other than UNSPECIFIED."""
    if value == common_pb2.PROVIDER_FAMILY_UNSPECIFIED:
        raise InvalidArgument(field, "required (openai, anthropic, gemini or vllm)")
    if value not in _FAMILIES:
        raise InvalidArgument(field, f"unknown provider family {value}")
    return value


def outage_policy(field: str, value: int) -> int:
    """A known OutagePolicy value."""
    if value not in _POLICIES:
        raise InvalidArgument(field, f"unknown outage policy {value}")
    return value


def timeout_ms(field: str, value: Duration | None) -> int:
    """A duration in [100 ms, 3600 s]; unset or zero means the 60 s default."""
    if value is None or (value.seconds == 0 and value.nanos == 0):
        return int(DEFAULT_TIMEOUT.total_seconds() * 1000)
    if value.seconds < 0 or value.nanos < 0:
        raise InvalidArgument(field, "must not be negative")
    td = value.ToTimedelta()
    if not MIN_TIMEOUT <= td <= MAX_TIMEOUT:
        raise InvalidArgument(field, "must be between 0.1s and 3600s")
    return int(td.total_seconds() * 1000)


def grace(field: str, value: Duration | None) -> timedelta:
    """A rotation grace period in [0, 30 days]."""
    if value is None:
        return timedelta(0)
    if value.seconds < 0 or value.nanos < 0:
        raise InvalidArgument(field, "must not be negative")
    td = value.ToTimedelta()
    if td > MAX_GRACE:
        raise InvalidArgument(field, "must be at most 30 days")
    return td


# $1,000,000 per million tokens, in micro-USD: beyond any real price. With token counts bounded
# per record (2^40), it keeps costs in exact integers a node can saturate (docs/usage.md).
MAX_PRICE_PER_MTOK_MICROS = 10**12


def price(field: str, value: int | None, unit: str = "tokens") -> int | None:
    """``None`` or a price in micro-USD per million ``unit`` from 0 to $1,000,000 (the same bound for
    tokens, seconds of audio and characters: every unit count is bounded by 2^40 per record too)."""
    non_negative(field, value)
    if value is not None and value > MAX_PRICE_PER_MTOK_MICROS:
        raise InvalidArgument(
            field, f"must be at most {MAX_PRICE_PER_MTOK_MICROS} micro-USD per million {unit} ($1,000,000)"
        )
    return value


def percent(field: str, value: int | None) -> int | None:
    """``None`` or a whole percentage from 0 to 100."""
    if value is not None and not 0 <= value <= 100:
        raise InvalidArgument(field, "must be a percentage from 0 to 100")
    return value


MAX_CONTEXT_WINDOW = 10**8
MAX_OUTPUT_TOKENS = 10**7


def token_count(field: str, value: int, maximum: int) -> int:
    """A model's token figure (context window, output cap) in [0, maximum]; 0 means unknown / default."""
    if value < 0:
        raise InvalidArgument(field, "must not be negative")
    if value > maximum:
        raise InvalidArgument(field, f"must be at most {maximum}")
    return value


def non_negative(field: str, value: int | None) -> int | None:
    """``None`` or an integer >= 0."""
    if value is not None and value < 0:
        raise InvalidArgument(field, "must not be negative")
    return value


def labels(field: str, value: Mapping[str, str]) -> dict[str, str]:
    """Free-form labels with bounded keys and values."""
    if len(value) > MAX_LABELS:
        raise InvalidArgument(field, f"at most {MAX_LABELS} labels")
    for k, v in value.items():
        if not _LABEL_KEY_RE.match(k):
            raise InvalidArgument(f"{field}[{k!r}]", "key must be 1-63 characters of A-Z, a-z, 0-9, '._/-'")
        if len(v) > MAX_LABEL_VALUE or not v.isprintable():
            raise InvalidArgument(
                f"{field}[{k!r}]", f"value must be at most {MAX_LABEL_VALUE} printable characters"
            )
    return dict(value)


def default_models(field: str, value: Mapping[str, str]) -> dict[str, str]:
    """Endpoint path (e.g. ``/v1/images/generations``) -> model name."""
    if len(value) > MAX_LABELS:
        raise InvalidArgument(field, f"at most {MAX_LABELS} entries")
    for endpoint, model in value.items():
        if not endpoint.startswith("/") or len(endpoint) > 256 or any(c.isspace() for c in endpoint):
            raise InvalidArgument(
                f"{field}[{endpoint!r}]", "key must be an endpoint path such as /v1/embeddings"
            )
        model_name(f"{field}[{endpoint!r}]", model)
    return dict(value)


def secret(field: str, value: str) -> str:
    """A plaintext provider key: 1..8192 bytes, printable, no whitespace."""
    if not value:
        raise InvalidArgument(field, "required")
    if len(value.encode("utf-8")) > MAX_SECRET_BYTES:
        raise InvalidArgument(field, f"must be at most {MAX_SECRET_BYTES} bytes")
    if any(c.isspace() or not c.isprintable() for c in value):
        raise InvalidArgument(field, "must not contain whitespace or control characters")
    if _holds_odock_key(value):
        # A gateway key as a provider key makes the gateway call itself with it: a loop.
        raise InvalidArgument(
            field,
            "is an Odock key (odk-/odka-); a credential holds the provider's own key, not a gateway key",
        )
    return value


_KEY_LENGTHS = {
    p: len(keyformat.generate(p)) for p in (keyformat.VIRTUAL_KEY_PREFIX, keyformat.ADMIN_TOKEN_PREFIX)
}


def _holds_odock_key(value: str) -> bool:
    """Whether ``value`` starts with an Odock key prefix or contains a well-formed Odock key."""
    if value.startswith((keyformat.VIRTUAL_KEY_PREFIX, keyformat.ADMIN_TOKEN_PREFIX)):
        return True
    for prefix, length in _KEY_LENGTHS.items():
        start = value.find(prefix)
        while start != -1:
            if keyformat.is_well_formed(value[start : start + length], prefix):
                return True
            start = value.find(prefix, start + 1)
    return False


def page_size(field: str, value: int) -> int:
    """0 -> the default (50); at most 1000."""
    if value < 0:
        raise InvalidArgument(field, "must not be negative")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def required(field: str, value: str) -> str:
    """A non-empty string."""
    if not value:
        raise InvalidArgument(field, "required")
    return value
