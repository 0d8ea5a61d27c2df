"""A model's deployments on the command line (issue 14): the ``--deployment`` flag's
``key=value,...`` syntax, the client-side checks ``apply`` also uses (the control plane checks
everything again), and how deployments are shown (a proxy password always masked)."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlsplit

from odock.proxyurl import mask_proxy
from odock.v1 import models_pb2
from odockctl.values import ValueProblem, check_base_url, format_duration_ms, parse_count, parse_duration_ms

NAME_RE = re.compile(r"[a-z0-9._-]{1,64}")
MAX_WEIGHT = 1000
MAX_PRIORITY = 100
MAX_CA_BUNDLE = 64 * 1024
MAX_DEPLOYMENTS = 16
MAX_FALLBACKS = 5
# --deployment keys -> what they set (ca-file: the bundle is read from that path).
FLAG_KEYS = ("name", "base-url", "credential", "slug", "weight", "priority", "timeout", "proxy", "ca-file")


def check_name(text: str) -> str:
    """A deployment name: 1..64 of a-z 0-9 . _ -."""
    if not NAME_RE.fullmatch(text):
        raise ValueProblem(f"deployment name {text!r} must be 1-64 characters of a-z, 0-9, '.', '_', '-'")
    return text


def check_bounded(text: str | int, what: str, maximum: int) -> int:
    """A whole number in [0, maximum]."""
    value = parse_count(text if isinstance(text, int) else str(text))
    if value > maximum:
        raise ValueProblem(f"{what} must be at most {maximum}")
    return value


def check_proxy_url(text: str) -> str:
    """ "", "direct" or http://[user:password@]host:port (no path, query or fragment)."""
    if text in ("", "direct"):
        return text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueProblem("proxy must be http://[user:password@]host:port or direct") from None
    if parts.scheme == "https":
        raise ValueProblem(
            "https proxies are not supported; use http:// (https upstreams go through CONNECT)"
        )
    if parts.scheme != "http" or not parts.hostname or port is None:
        raise ValueProblem("proxy must be http://[user:password@]host:port or direct")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueProblem("proxy must not have a path, query or fragment")
    return text.rstrip("/")


def check_ca_bundle(text: str) -> str:
    """At most 64 KiB holding at least one PEM certificate (the control plane parses it)."""
    if len(text.encode("utf-8")) > MAX_CA_BUNDLE:
        raise ValueProblem(f"CA bundle must be at most {MAX_CA_BUNDLE} bytes")
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ValueProblem("CA bundle must hold PEM certificates (-----BEGIN CERTIFICATE-----)")
    return text


def parse_flag(text: str, read_file: Callable[[str], str]) -> models_pb2.Deployment:
    """``name=eu,base-url=https://...,credential=main,slug=gpt-4.1,weight=9,priority=0,timeout=30s,
    proxy=http://host:3128,ca-file=PATH`` -> a Deployment (values must not contain commas)."""
    out = models_pb2.Deployment()
    seen: set[str] = set()
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueProblem(f"expected key=value, got {item!r} (keys: {', '.join(FLAG_KEYS)})")
        if key not in FLAG_KEYS:
            raise ValueProblem(f"unknown key {key!r} (keys: {', '.join(FLAG_KEYS)})")
        if key in seen:
            raise ValueProblem(f"{key} given twice")
        seen.add(key)
        _set(out, key, value, read_file)
    for required in ("base-url", "credential", "slug"):
        if required not in seen:
            raise ValueProblem(f"{required}= is required")
    return out


def _set(out: models_pb2.Deployment, key: str, value: str, read_file: Callable[[str], str]) -> None:
    if key == "name":
        out.name = check_name(value)
    elif key == "base-url":
        out.base_url = check_base_url(value)
    elif key == "credential":
        out.credential = value
    elif key == "slug":
        out.upstream_slug = value
    elif key == "weight":
        out.weight = check_bounded(value, "weight", MAX_WEIGHT)
    elif key == "priority":
        out.priority = check_bounded(value, "priority", MAX_PRIORITY)
    elif key == "timeout":
        out.timeout.FromMilliseconds(parse_duration_ms(value))
    elif key == "proxy":
        out.proxy_url = check_proxy_url(value)
    else:  # ca-file
        out.ca_bundle = check_ca_bundle(read_file(value))


def summary(d: models_pb2.Deployment) -> str:
    """One line for a deployment (the CA bundle as its size only)."""
    ms = d.timeout.seconds * 1000 + d.timeout.nanos // 1_000_000
    text = (
        f"{d.name}: {d.base_url} slug={d.upstream_slug} credential={d.credential}"
        f" weight={d.weight} priority={d.priority} timeout={format_duration_ms(ms)}"
    )
    if d.proxy_url:
        text += f" proxy={mask_proxy(d.proxy_url)}"
    if d.ca_bundle:
        text += f" ca-bundle={len(d.ca_bundle.encode('utf-8'))} bytes"
    return text
