"""One servicer per resource, sharing :class:`Deps`: sessions, settings, keyring, change feed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane.crypto import Keyring
from control_plane.errors import AlreadyExists, InvalidArgument, is_unique_violation
from control_plane.settings import Settings


class Poker(Protocol):
    """What services need of the change feed: a nudge after committing a change."""

    def poke(self) -> None: ...


@dataclass(frozen=True)
class Deps:
    """Everything a servicer needs, passed explicitly."""

    sessionmaker: async_sessionmaker[AsyncSession]
    settings: Settings
    keyring: Keyring
    feed: Poker

    def read(self) -> AsyncSession:
        """A session for reads (use as ``async with``)."""
        return self.sessionmaker()

    @asynccontextmanager
    async def write(self, conflict: str | None = None) -> AsyncIterator[AsyncSession]:
        """One transaction, committed on exit; a unique violation becomes AlreadyExists(conflict)."""
        try:
            async with self.sessionmaker.begin() as session:
                yield session
        except IntegrityError as exc:
            if conflict is not None and is_unique_violation(exc):
                raise AlreadyExists(conflict) from None
            raise


def mask_paths(mask: FieldMask, allowed: Iterable[str], *, prefix: str = "update_mask") -> set[str]:
    """The requested update paths; every allowed top-level path when the mask is empty.

    Sub-paths (``limits.tokens_per_minute``) are accepted when listed in ``allowed``.
    """
    allowed_set = set(allowed)
    if not mask.paths:
        return {p for p in allowed_set if "." not in p}
    for path in mask.paths:
        if path not in allowed_set:
            raise InvalidArgument(prefix, f"unknown or read-only path {path!r}")
    return set(mask.paths)
