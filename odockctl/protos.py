"""Small typed helpers over generated messages (field names chosen at runtime)."""

from __future__ import annotations

from typing import cast

from google.protobuf.message import Message

from odock.v1 import common_pb2


def has(message: Message, field: str) -> bool:
    """Whether an optional/message field is set."""
    return message.HasField(field)


def optional_int(message: Message, field: str) -> int | None:
    """A proto3 ``optional int64`` as int or None."""
    return cast(int, getattr(message, field)) if message.HasField(field) else None


def clear(message: Message, field: str) -> None:
    """Unset a field."""
    message.ClearField(field)


def family(value: int) -> common_pb2.ProviderFamily.ValueType:
    """An int as the ProviderFamily enum type."""
    return common_pb2.ProviderFamily.ValueType(value)


def outage_policy(value: int) -> common_pb2.OutagePolicy.ValueType:
    """An int as the OutagePolicy enum type."""
    return common_pb2.OutagePolicy.ValueType(value)
