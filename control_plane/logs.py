"""Process-wide logging for the control plane, configured once at startup.

``json``: one JSON object per line (``time``, ``level``, ``logger``, ``message``,
then any ``extra=`` fields, then ``exception``). ``text``: the classic
``time LEVEL logger: message key=value`` line. Both go to stderr.

Nothing in the control plane logs secrets on purpose; as a second line of
defence the handler replaces every configured secret value (tokens, pepper,
KEKs, the database password) with ``[redacted]`` in whatever it writes, and the
loggers of the database libraries, which would print SQL parameters (digests,
ciphertext) at debug level, are held at WARNING whatever the level.
"""

from __future__ import annotations

import base64
from typing import TextIO

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from control_plane.settings import Settings
from odock import logfmt
from odock.envconfig import LogSettings
from odock.logfmt import LogSetup

# Their debug output includes statement parameters (digests, ciphertext, URLs), or is chatter.
QUIET_LOGGERS = ("sqlalchemy", "aiosqlite", "psycopg", "alembic", "aiohttp.access", "grpc._cython")


def configure(settings: LogSettings, stream: TextIO | None = None) -> LogSetup:
    """Install this plane's stderr handler at ``settings.level`` (see ``odock.logfmt``)."""
    return logfmt.configure(settings.format, settings.level, QUIET_LOGGERS, stream)


def secret_values(settings: Settings) -> list[str]:
    """The strings a log line must never contain: tokens, pepper, KEKs, the database password."""
    values = [settings.admin_token, *settings.node_tokens]
    keys = [settings.key_pepper]
    keys += [base64.b64decode(part.partition("=")[2]) for part in settings.keks_spec.split(",") if part]
    for raw in keys:  # every spelling the environment may have used
        for text in (base64.b64encode(raw).decode("ascii"), base64.urlsafe_b64encode(raw).decode("ascii")):
            values += [text, text.rstrip("=")]
    password = database_password(settings.database_url)
    if password:
        values.append(password)
    return values


def database_password(url: str) -> str | None:
    """The password in a database URL, if any."""
    try:
        return make_url(url).password
    except ArgumentError:
        return None
