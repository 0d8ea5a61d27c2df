"""The files and batches endpoints' own errors (rendered in OpenAI's shape by the middleware).

Another organisation's object answers exactly like a missing one (the same 404, the same
message), so ids cannot be probed; the message is OpenAI's own ("No such File object: <id>").
"""

from __future__ import annotations

from data_plane.errors import GatewayError, clip
from data_plane.objects.ledger import Kind

RETRY_AFTER_SECONDS = 5
_NAMES = {Kind.FILE: "File", Kind.BATCH: "Batch"}


class NoSuchObject(GatewayError):
    """404 for an object the org does not have: OpenAI's message, ``param`` "id", ``code`` null
    on the wire (``providers.openai.NULL_CODES``), ``object_not_found`` in records and logs."""

    def __init__(self, kind: Kind, object_id: str) -> None:
        super().__init__(404, "object_not_found", f"No such {_NAMES[kind]} object: {clip(object_id)}", param="id")


def no_such(kind: Kind, object_id: str) -> GatewayError:
    """The 404 for ``object_id`` when it is not the org's (missing, deleted, another org's)."""
    return NoSuchObject(kind, object_id)


def deployment_gone() -> GatewayError:
    """The 502 for an object whose deployment (or model) was removed since it was created."""
    return GatewayError(502, "object_deployment_gone", "the deployment holding this object was removed")


def ledger_unavailable() -> GatewayError:
    """The 503 when the control plane, which keeps who owns what, cannot be asked."""
    return GatewayError(
        503,
        "control_plane_unavailable",
        "Gateway cannot verify the object's owner right now (control plane unreachable); retry shortly",
        retry_after=RETRY_AFTER_SECONDS,
    )
