"""Anthropic: the Messages API."""

from __future__ import annotations

from data_plane.providers.endpoint import Dialect, Endpoint
from odock.v1 import common_pb2

FAMILY = common_pb2.PROVIDER_FAMILY_ANTHROPIC
# Anthropic refuses requests without a version header; the SDK always sends one, curl may not.
DEFAULT_VERSION = "2023-06-01"

ENDPOINTS = (
    Endpoint(
        family=FAMILY,
        method="POST",
        route="/v1/messages",
        name="/v1/messages",
        body="json",
        model_in="body",
        streams="body_flag",
        upstream_path="/v1/messages",  # the base URL is the server root
    ),
)

DIALECT = Dialect(
    family=FAMILY,
    endpoints=ENDPOINTS,
    auth_header="x-api-key",
    default_headers={"anthropic-version": DEFAULT_VERSION},
)
