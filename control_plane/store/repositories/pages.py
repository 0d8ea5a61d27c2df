"""Keyset pagination with opaque page tokens bound to the listing they came from."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from control_plane.errors import InvalidArgument

T = TypeVar("T")


def encode(scope: str, after: str) -> str:
    """A page token continuing after ``after`` in the listing ``scope``."""
    raw = json.dumps({"s": scope, "a": after}, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode(field: str, token: str, scope: str) -> str | None:
    """The position a token continues after; InvalidArgument if it is foreign or malformed."""
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidArgument(field, "malformed page token") from None
    if not isinstance(data, dict) or data.get("s") != scope or not isinstance(data.get("a"), str):
        raise InvalidArgument(field, "page token does not belong to this listing")
    after: str = data["a"]
    return after


async def fetch_page(
    session: AsyncSession,
    stmt: Select[T],
    key: InstrumentedAttribute[Any],
    *,
    scope: str,
    after: str | None,
    size: int,
) -> tuple[Sequence[T], str]:
    """Rows after ``after`` ordered by ``key``, and the next page token ('' on the last page)."""
    if after is not None:
        stmt = stmt.where(key > after)
    rows = (await session.scalars(stmt.order_by(key).limit(size + 1))).all()
    if len(rows) <= size:
        return rows, ""
    rows = rows[:size]
    return rows, encode(scope, str(getattr(rows[-1], key.key)))
