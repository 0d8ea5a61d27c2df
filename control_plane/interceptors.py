"""Authentication and authorisation from ``authorization: Bearer`` metadata.

``odock.v1.NodeService`` takes node tokens only; every other ``odock.v1`` service
takes the super-admin token or an org admin token; health and reflection are
open. The authenticated principal reaches handlers through a context variable,
and domain errors raised by handlers become gRPC statuses here (errors.status_of).
``MetricsInterceptor`` (first in the chain) times and counts every RPC.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

import grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane.errors import DomainError, PermissionDenied, Unauthenticated, status_of
from control_plane.metrics import NODE_STREAM_KINDS, UNKNOWN, ControlPlaneMetrics
from control_plane.settings import Settings
from control_plane.store.repositories import admin_tokens
from odock import keyformat

NODE_SERVICE_PREFIX = "/odock.v1.NodeService/"
OPEN_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
# RPCs an org admin may never call, whatever org they name.
SUPER_ONLY = frozenset(
    {
        "/odock.v1.OrgService/CreateOrg",
        "/odock.v1.OrgService/ListOrgs",
        "/odock.v1.OrgService/DeleteOrg",
        "/odock.v1.CredentialService/RewrapCredentials",
    }
)

MISSING_TOKEN = "missing bearer token in 'authorization' metadata"
UNKNOWN_TOKEN = "unknown or revoked token"
NODE_TOKEN_ON_ADMIN = "node tokens cannot call admin RPCs"
ADMIN_TOKEN_ON_NODE = "admin tokens cannot call NodeService; use a node token"
SUPER_ADMIN_ONLY = "only the super-admin may call this RPC"
OTHER_ORG = "this token is scoped to another org"

_rpc_log = logging.getLogger("odock.control_plane.rpc")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the super-admin, an org admin (with its org) or a data-plane node."""

    kind: Literal["super", "org", "node"]
    org_id: str | None = None
    token_id: str | None = None

    @property
    def is_super(self) -> bool:
        """True for the super-admin."""
        return self.kind == "super"

    def check_org(self, org_id: str) -> None:
        """PermissionDenied unless the caller may act on ``org_id``."""
        if self.kind == "org" and org_id != self.org_id:
            raise PermissionDenied(OTHER_ORG)

    def require_super(self) -> None:
        """PermissionDenied unless the caller is the super-admin."""
        if not self.is_super:
            raise PermissionDenied(SUPER_ADMIN_ONLY)


_PRINCIPAL: ContextVar[Principal | None] = ContextVar("odock_principal", default=None)


def current_principal() -> Principal:
    """The principal of the RPC being handled (set by the interceptor)."""
    principal = _PRINCIPAL.get()
    if principal is None:
        raise Unauthenticated(MISSING_TOKEN)
    return principal


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    """The token of an ``authorization: Bearer`` entry, or ''."""
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() == "bearer":
            return token.strip()
    return ""


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every RPC and maps handler errors to statuses."""

    def __init__(self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._admin = settings.admin_token.encode("utf-8")
        self._nodes = tuple(t.encode("utf-8") for t in settings.node_tokens)
        self._pepper = settings.key_pepper
        self._sessionmaker = sessionmaker

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        token = bearer_token(handler_call_details.invocation_metadata)
        principal: Principal | None = None
        error: DomainError | None = None
        try:
            principal = await self._authenticate(method, token)
        except DomainError as exc:
            error = exc
        return _wrap(handler, method, principal, error)

    def _is_super(self, token: bytes) -> bool:
        return hmac.compare_digest(token, self._admin)

    def _is_node(self, token: bytes) -> bool:
        hit = False
        for node in self._nodes:  # no early exit: time does not depend on which token matched
            hit |= hmac.compare_digest(token, node)
        return hit

    async def _org_token(self, token: str) -> Principal | None:
        if not keyformat.is_well_formed(token, keyformat.ADMIN_TOKEN_PREFIX):
            return None
        async with self._sessionmaker() as session:
            row = await admin_tokens.by_digest(session, keyformat.digest(self._pepper, token))
        if row is None or row.revoked:
            return None
        return Principal("org", org_id=row.org_id, token_id=row.id)

    async def _authenticate(self, method: str, token: str) -> Principal:
        if not token:
            raise Unauthenticated(MISSING_TOKEN)
        raw = token.encode("utf-8")
        if method.startswith(NODE_SERVICE_PREFIX):
            if self._is_node(raw):
                return Principal("node")
            if self._is_super(raw) or await self._org_token(token) is not None:
                raise PermissionDenied(ADMIN_TOKEN_ON_NODE)
            raise Unauthenticated(UNKNOWN_TOKEN)
        if self._is_super(raw):
            return Principal("super")
        if self._is_node(raw):
            raise PermissionDenied(NODE_TOKEN_ON_ADMIN)
        principal = await self._org_token(token)
        if principal is None:
            raise Unauthenticated(UNKNOWN_TOKEN)
        if method in SUPER_ONLY:
            raise PermissionDenied(SUPER_ADMIN_ONLY)
        return principal


async def _fail(context: grpc.aio.ServicerContext[Any, Any], method: str, exc: BaseException) -> None:
    code, message = status_of(exc, method)
    await context.abort(code, message)


def _wrap(
    handler: grpc.RpcMethodHandler[Any, Any],
    method: str,
    principal: Principal | None,
    error: DomainError | None,
) -> grpc.RpcMethodHandler[Any, Any]:
    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if error is not None:
            await _fail(context, method, error)
        token = _PRINCIPAL.set(principal)
        try:
            inner: Any = handler.unary_unary or handler.stream_unary
            return await inner(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - the one place handler errors become statuses
            await _fail(context, method, exc)
        finally:
            _PRINCIPAL.reset(token)

    async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        if error is not None:
            await _fail(context, method, error)
        # Each RPC runs in its own task, so the value cannot leak to another call.
        _PRINCIPAL.set(principal)
        try:
            inner: Any = handler.unary_stream or handler.stream_stream
            result = inner(request, context)
            if inspect.isasyncgen(result):
                async for item in result:
                    yield item
            else:
                await result
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - as above, for streams
            await _fail(context, method, exc)

    return _rebuild(handler, unary, streaming)


# -- metrics ----------------------------------------------------------------

# Codes that mean the server failed (as opposed to the caller or the data).
_SERVER_FAULTS = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS})


def _outcome(context: grpc.aio.ServicerContext[Any, Any], error: BaseException | None) -> grpc.StatusCode:
    if error is None or isinstance(error, grpc.aio.AbortError):
        code = context.code()
        if code is None:
            return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN
        return code
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Times every RPC and counts it by method and status code (put it first: it sees auth failures).

    Labels are bounded: a method not in ``known_methods`` is counted as ``unknown``.
    """

    def __init__(self, metrics: ControlPlaneMetrics, known_methods: frozenset[str]) -> None:
        self._m = metrics
        self._known = known_methods

    def _labels(self, method: str) -> tuple[str, str]:
        if method not in self._known:
            return UNKNOWN, UNKNOWN
        service, _, name = method[1:].rpartition("/")
        return service, name

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        labels = self._labels(method)
        if handler is None:  # grpc answers UNIMPLEMENTED
            self._m.rpc_handled.labels(*labels, grpc.StatusCode.UNIMPLEMENTED.name).inc()
            return None
        return self._wrap(handler, method, labels)

    def _begin(self, labels: tuple[str, str], stream_kind: str | None) -> float:
        self._m.rpc_in_flight.labels(*labels).inc()
        if stream_kind is not None:
            self._m.node_streams.labels(stream_kind).inc()
        return time.perf_counter()

    def _end(
        self,
        labels: tuple[str, str],
        stream_kind: str | None,
        started: float,
        context: grpc.aio.ServicerContext[Any, Any],
        error: BaseException | None,
    ) -> None:
        elapsed = time.perf_counter() - started
        code = _outcome(context, error)
        self._m.rpc_in_flight.labels(*labels).dec()
        if stream_kind is not None:
            self._m.node_streams.labels(stream_kind).dec()
        self._m.rpc_seconds.labels(*labels).observe(elapsed)
        self._m.rpc_handled.labels(*labels, code.name).inc()
        fields = {
            "grpc_method": "/".join(labels),
            "grpc_code": code.name,
            "duration_ms": round(elapsed * 1000, 3),
        }
        if code in _SERVER_FAULTS:
            _rpc_log.warning("rpc failed", extra=fields)
        else:
            _rpc_log.debug("rpc done", extra=fields)

    def _wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str, labels: tuple[str, str]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        kind = NODE_STREAM_KINDS.get(method)

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = self._begin(labels, None)
            error: BaseException | None = None
            try:
                inner: Any = handler.unary_unary or handler.stream_unary
                return await inner(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._end(labels, None, started, context, error)

        async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            started = self._begin(labels, kind)
            error: BaseException | None = None
            try:
                inner: Any = handler.unary_stream or handler.stream_stream
                result = inner(request, context)
                if inspect.isasyncgen(result):
                    async for item in result:
                        yield item
                else:  # a handler that writes with context.write()
                    await result
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._end(labels, kind, started, context, error)

        return _rebuild(handler, unary, streaming)


def _rebuild(
    handler: grpc.RpcMethodHandler[Any, Any], unary: Any, streaming: Any
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same kind and serializers as ``handler`` running ``unary``/``streaming``."""
    des, ser = handler.request_deserializer, handler.response_serializer
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary, request_deserializer=des, response_serializer=ser)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary, request_deserializer=des, response_serializer=ser)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            streaming, request_deserializer=des, response_serializer=ser
        )
    return grpc.stream_stream_rpc_method_handler(streaming, request_deserializer=des, response_serializer=ser)
