"""Process-wide logging for the data plane, configured once at startup.

``json``: one JSON object per line (``time``, ``level``, ``logger``, ``message``,
then any ``extra=`` fields, then ``exception``). ``text``: the classic
``time LEVEL logger: message key=value`` line. Both go to stderr. The same
shapes as the control plane's (both come from ``odock.logfmt``).

Nothing in the data plane logs secrets on purpose: virtual keys are reduced to
their digest at once and never kept, provider keys live only inside cached
routes, and request and response bodies are never logged (there is no switch
to log them). As a second line of defence the handler replaces the secrets
this process is configured with (node token, pepper) with ``[redacted]``.
"""

from __future__ import annotations

import base64
from typing import TextIO

from odock import logfmt
from odock.logfmt import LogSetup

from data_plane.settings import LogSettings, Settings

# Chatter (access logs are off anyway: the request log replaces them), or gRPC internals.
QUIET_LOGGERS = ("aiohttp.access", "grpc._cython", "asyncio")


def configure(settings: LogSettings, stream: TextIO | None = None) -> LogSetup:
    """Install this plane's stderr handler at ``settings.level`` (see ``odock.logfmt``)."""
    return logfmt.configure(settings.format, settings.level, QUIET_LOGGERS, stream)


def secret_values(settings: Settings) -> list[str]:
    """The strings a log line must never contain: the node token and the pepper (every spelling)."""
    values = [settings.node_token]
    raw = settings.key_pepper
    for text in (base64.b64encode(raw).decode("ascii"), base64.urlsafe_b64encode(raw).decode("ascii")):
        values += [text, text.rstrip("=")]
    values.append(raw.hex())
    return values
