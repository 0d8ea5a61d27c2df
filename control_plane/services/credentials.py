"""CredentialService: provider keys under envelope encryption. Secrets go in, never out."""

from __future__ import annotations

from typing import Any

import grpc

from control_plane import convert, ids, validation
from control_plane.crypto import CryptoError, Envelope, Keyring, encrypt, rewrap
from control_plane.errors import AlreadyExists, FailedPrecondition
from control_plane.interceptors import current_principal
from control_plane.services import Deps
from control_plane.store import changes
from control_plane.store.repositories import credentials, deployments, orgs, pages
from control_plane.store.tables import CredentialRow, utcnow
from odock.v1 import credentials_pb2, credentials_pb2_grpc, node_pb2

Ctx = grpc.aio.ServicerContext[Any, Any]
# Below this length the last four characters would give away too much of the secret.
MIN_LEN_FOR_LAST4 = 12
REWRAP_BATCH = 200


def _last4(secret: str) -> str:
    return secret[-4:] if len(secret) >= MIN_LEN_FOR_LAST4 else ""


def _seal(row: CredentialRow, env: Envelope) -> None:
    row.kek_id, row.wrapped_dek, row.ciphertext = env.kek_id, env.wrapped_dek, env.ciphertext


class CredentialServicer(credentials_pb2_grpc.CredentialServiceServicer):
    """Create, list, rotate, delete and re-wrap provider credentials."""

    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def CreateCredential(
        self, request: credentials_pb2.CreateCredentialRequest, context: Ctx
    ) -> credentials_pb2.Credential:
        org_id = validation.required("org_id", request.org_id)
        current_principal().check_org(org_id)
        name = validation.name("name", request.name)
        family = validation.family("family", request.family)
        secret = validation.secret("secret", request.secret)
        row = CredentialRow(
            id=ids.new_id(ids.CREDENTIAL), org_id=org_id, name=name, family=family, last4=_last4(secret),
            create_time=utcnow(),
        )  # fmt: skip
        _seal(row, encrypt(self._deps.keyring, secret.encode("utf-8"), row.id))
        conflict = f"credential {name!r} already exists in org {org_id!r}"
        async with self._deps.write(conflict) as session:
            await orgs.require(session, org_id)
            if await credentials.get_by_name(session, org_id, name) is not None:
                raise AlreadyExists(conflict)
            session.add(row)
        return convert.credential_to_proto(row)

    async def GetCredential(
        self, request: credentials_pb2.GetCredentialRequest, context: Ctx
    ) -> credentials_pb2.Credential:
        org_id = validation.required("org_id", request.org_id)
        current_principal().check_org(org_id)
        name = validation.required("name", request.name)
        async with self._deps.read() as session:
            row = await credentials.require(session, org_id, name)
        return convert.credential_to_proto(row)

    async def ListCredentials(
        self, request: credentials_pb2.ListCredentialsRequest, context: Ctx
    ) -> credentials_pb2.ListCredentialsResponse:
        org_id = validation.required("org_id", request.org_id)
        current_principal().check_org(org_id)
        size = validation.page_size("page_size", request.page_size)
        after = pages.decode("page_token", request.page_token, f"credentials:{org_id}")
        async with self._deps.read() as session:
            await orgs.require(session, org_id)
            rows, token = await credentials.list_page(session, org_id, after, size)
        return credentials_pb2.ListCredentialsResponse(
            credentials=[convert.credential_to_proto(r) for r in rows], next_page_token=token
        )

    async def RotateCredential(
        self, request: credentials_pb2.RotateCredentialRequest, context: Ctx
    ) -> credentials_pb2.Credential:
        org_id = validation.required("org_id", request.org_id)
        current_principal().check_org(org_id)
        name = validation.required("name", request.name)
        secret = validation.secret("secret", request.secret)
        async with self._deps.write() as session:
            row = await credentials.require(session, org_id, name)
            _seal(row, encrypt(self._deps.keyring, secret.encode("utf-8"), row.id))
            row.last4 = _last4(secret)
            row.rotate_time = utcnow()
            await changes.record_change(
                session, node_pb2.INVALIDATION_KIND_CREDENTIAL, org_id, credential_id=row.id
            )
            # A node tags a cached route with its top-level (first deployment's) credential; the
            # models using this one in another deployment are invalidated by name as well.
            for model_org, model_name in await deployments.models_using_beyond_first(session, row.id):
                await changes.record_change(
                    session, node_pb2.INVALIDATION_KIND_MODEL, model_org, model_name=model_name
                )
        self._deps.feed.poke()
        return convert.credential_to_proto(row)

    async def DeleteCredential(
        self, request: credentials_pb2.DeleteCredentialRequest, context: Ctx
    ) -> credentials_pb2.DeleteCredentialResponse:
        org_id = validation.required("org_id", request.org_id)
        current_principal().check_org(org_id)
        name = validation.required("name", request.name)
        async with self._deps.write() as session:
            row = await credentials.require(session, org_id, name)
            users = await credentials.models_using(session, row.id)
            if users:
                listed = ", ".join(repr(u) for u in users[:20]) + (" ..." if len(users) > 20 else "")
                raise FailedPrecondition(f"credential {name!r} is used by models {listed}")
            await session.delete(row)
            await changes.record_change(
                session, node_pb2.INVALIDATION_KIND_CREDENTIAL, org_id, credential_id=row.id
            )
        self._deps.feed.poke()
        return credentials_pb2.DeleteCredentialResponse()

    async def _rewrap_proxies(self, keyring: Keyring) -> None:
        """Deployments' proxy passwords are encrypted like credentials: re-wrapped with them (not counted)."""
        async with self._deps.write() as session:
            for row in await deployments.all_with_proxy_secret(session):
                if row.proxy_kek_id == keyring.newest_id or row.proxy_wrapped_dek is None:
                    continue
                env = Envelope(row.proxy_kek_id or "", row.proxy_wrapped_dek, row.proxy_ciphertext or b"")
                try:
                    new = rewrap(keyring, env, row.id)
                except CryptoError as exc:
                    raise FailedPrecondition(f"cannot re-wrap a deployment's proxy URL: {exc}") from None
                row.proxy_kek_id, row.proxy_wrapped_dek, row.proxy_ciphertext = (
                    new.kek_id,
                    new.wrapped_dek,
                    new.ciphertext,
                )

    async def RewrapCredentials(
        self, request: credentials_pb2.RewrapCredentialsRequest, context: Ctx
    ) -> credentials_pb2.RewrapCredentialsResponse:
        current_principal().require_super()
        keyring = self._deps.keyring
        rewrapped = unchanged = 0
        async with self._deps.read() as session:
            all_ids = await credentials.all_ids(session)
        for start in range(0, len(all_ids), REWRAP_BATCH):
            async with self._deps.write() as session:
                batch = all_ids[start : start + REWRAP_BATCH]
                for row in await credentials.by_ids(session, batch):
                    if row.kek_id == keyring.newest_id:
                        unchanged += 1
                        continue
                    env = Envelope(row.kek_id, row.wrapped_dek, row.ciphertext)
                    try:
                        _seal(row, rewrap(keyring, env, row.id))
                    except CryptoError as exc:  # the message names the row, never key material
                        raise FailedPrecondition(f"cannot re-wrap: {exc}") from None
                    rewrapped += 1
        await self._rewrap_proxies(keyring)
        return credentials_pb2.RewrapCredentialsResponse(
            rewrapped=rewrapped, unchanged=unchanged, kek_id=keyring.newest_id
        )
