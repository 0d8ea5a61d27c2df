"""A model's deployments and fallbacks (issue 14) for ModelService: validation of what a client
sent, the credential and egress checks, and the rows to store (a proxy password encrypted).

A ``Spec`` is one deployment as validated input: names resolved to defaults, the proxy URL in
plaintext (password included; ``***`` as the password stands for the one stored under the same
deployment name). ``where`` is the field path its errors name: ``model`` for a model given by its
top-level fields (so today's messages stay as they are), ``model.deployments[NAME]`` otherwise.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from control_plane import egress, ids, validation
from control_plane.crypto import CryptoError, Envelope, Keyring, decrypt, encrypt
from control_plane.errors import DataLoss, InvalidArgument
from control_plane.store.repositories import credentials, models
from control_plane.store.tables import CredentialRow, ModelDeploymentRow, ModelRow
from odock.egress import EgressPolicy
from odock.proxyurl import MASKED_PASSWORD, mask_proxy
from odock.v1 import common_pb2, models_pb2

MAX_DEPLOYMENTS = 16
MAX_FALLBACKS = 5
MAX_WEIGHT = 1000
MAX_PRIORITY = 100
NAME_RE = re.compile(r"^[a-z0-9._-]{1,64}$")
TOP_LEVEL = ("upstream_slug", "base_url", "timeout", "credential")


@dataclass(frozen=True)
class Spec:
    """One deployment as validated input (or as stored, for comparison)."""

    name: str
    base_url: str
    credential: str  # the credential's name in the model's org
    upstream_slug: str
    timeout_ms: int
    weight: int = 1
    priority: int = 0
    proxy_url: str = ""  # "", "direct" or the URL with its password
    ca_bundle: str = ""
    where: str = dataclasses.field(default="model", compare=False)


def default_name(index: int) -> str:
    """The name a deployment gets when none is given: "default", then "d2", "d3"..."""
    return "default" if index == 0 else f"d{index + 1}"


def _family_name(value: int) -> str:
    return common_pb2.ProviderFamily.Name(value).removeprefix("PROVIDER_FAMILY_").lower()  # type: ignore[arg-type]


def single(msg: models_pb2.Model) -> Spec:
    """The one deployment a model given by its top-level fields has (validated as always)."""
    return Spec(
        name=default_name(0),
        upstream_slug=validation.slug("model.upstream_slug", msg.upstream_slug),
        base_url=validation.base_url("model.base_url", msg.base_url),
        timeout_ms=validation.timeout_ms("model.timeout", msg.timeout if msg.HasField("timeout") else None),
        credential=msg.credential,
    )


def single_fields(msg: models_pb2.Model, paths: Iterable[str]) -> dict[str, Any]:
    """The top-level fields named in ``paths`` (an update of a one-deployment model), validated."""
    out: dict[str, Any] = {}
    for path in paths:
        if path == "upstream_slug":
            out["upstream_slug"] = validation.slug("model.upstream_slug", msg.upstream_slug)
        elif path == "base_url":
            out["base_url"] = validation.base_url("model.base_url", msg.base_url)
        elif path == "timeout":
            value = msg.timeout if msg.HasField("timeout") else None
            out["timeout_ms"] = validation.timeout_ms("model.timeout", value)
        elif path == "credential":
            out["credential"] = msg.credential
    return out


def parse(given: Sequence[models_pb2.Deployment]) -> list[Spec]:
    """The deployments a client sent, validated (1..16, names unique), in order."""
    if not given:
        raise InvalidArgument("model.deployments", "at least one deployment is required")
    if len(given) > MAX_DEPLOYMENTS:
        raise InvalidArgument("model.deployments", f"at most {MAX_DEPLOYMENTS} deployments")
    names: list[str] = []
    for i, d in enumerate(given):
        name = d.name or default_name(i)
        if not NAME_RE.match(name):
            raise InvalidArgument(
                f"model.deployments[{i}].name", "must be 1-64 characters of a-z, 0-9, '.', '_', '-'"
            )
        if name in names:
            raise InvalidArgument(
                f"model.deployments[{i}].name", f"{name!r} is already the name of another deployment"
            )
        names.append(name)
    return [_parse_one(d, name) for d, name in zip(given, names, strict=True)]


def _parse_one(d: models_pb2.Deployment, name: str) -> Spec:
    where = f"model.deployments[{name}]"
    if d.weight > MAX_WEIGHT:
        raise InvalidArgument(f"{where}.weight", f"must be at most {MAX_WEIGHT}")
    if d.priority > MAX_PRIORITY:
        raise InvalidArgument(f"{where}.priority", f"must be at most {MAX_PRIORITY}")
    return Spec(
        name=name,
        base_url=validation.base_url(f"{where}.base_url", d.base_url),
        credential=validation.required(f"{where}.credential", d.credential),
        upstream_slug=validation.slug(f"{where}.upstream_slug", d.upstream_slug),
        timeout_ms=validation.timeout_ms(f"{where}.timeout", d.timeout if d.HasField("timeout") else None),
        weight=d.weight or 1,
        priority=d.priority,
        proxy_url=validation.proxy_url(f"{where}.proxy_url", d.proxy_url),
        ca_bundle=validation.ca_bundle(f"{where}.ca_bundle", d.ca_bundle),
        where=where,
    )


def check_top_level(msg: models_pb2.Model, first: Spec) -> None:
    """With deployments given, the top-level fields must be empty or repeat the first deployment's."""
    given = {"upstream_slug": msg.upstream_slug, "base_url": msg.base_url, "credential": msg.credential}
    for field, value in given.items():
        if value and value != getattr(first, field):
            raise InvalidArgument(
                f"model.{field}", "must be empty or equal the first deployment's when deployments are given"
            )
    timeout = msg.timeout if msg.HasField("timeout") and (msg.timeout.seconds or msg.timeout.nanos) else None
    if timeout is not None and validation.timeout_ms("model.timeout", timeout) != first.timeout_ms:
        raise InvalidArgument(
            "model.timeout", "must be empty or equal the first deployment's when deployments are given"
        )


def check_conventions(specs: Iterable[Spec], family: int) -> None:
    """Each base URL against the family's conventions (odock.baseurl)."""
    for spec in specs:
        validation.base_url_convention(f"{spec.where}.base_url", spec.base_url, family)


def fallbacks(values: Iterable[str], model_name: str) -> list[str]:
    """0..5 other model names, no duplicates."""
    out = list(values)
    if len(out) > MAX_FALLBACKS:
        raise InvalidArgument("model.fallbacks", f"at most {MAX_FALLBACKS} fallback models")
    for i, value in enumerate(out):
        validation.model_name(f"model.fallbacks[{i}]", value)
        if value == model_name:
            raise InvalidArgument(f"model.fallbacks[{i}]", "a model cannot be its own fallback")
        if value in out[:i]:
            raise InvalidArgument(f"model.fallbacks[{i}]", f"{value!r} is listed twice")
    return out


async def check_fallbacks_exist(session: AsyncSession, org_id: str, names: Sequence[str]) -> None:
    """Every fallback is a model of the org (now; deleting one later is refused)."""
    missing = await models.missing_names(session, org_id, names)
    if missing:
        raise InvalidArgument("model.fallbacks", f"no model named {missing[0]!r} in org {org_id!r}")


def known_addresses(rows: Iterable[ModelDeploymentRow]) -> set[str]:
    """The base URLs and (masked) proxy URLs a model uses now: not judged again by the egress policy."""
    out: set[str] = set()
    for row in rows:
        out.add(row.base_url)
        if row.proxy_url:
            out.add(row.proxy_url)
    return out


async def check_egress(
    specs: Iterable[Spec], known: set[str], policy: EgressPolicy, resolve: egress.Resolver
) -> None:
    """New base URLs and proxies against the egress policy (a proxy reaches hosts like a base URL)."""
    for spec in specs:
        if spec.base_url not in known:
            await egress.check_base_url(f"{spec.where}.base_url", spec.base_url, policy, resolve=resolve)
        proxy = spec.proxy_url
        if proxy not in ("", "direct") and mask_proxy(proxy) not in known:
            await egress.check_base_url(f"{spec.where}.proxy_url", proxy, policy, resolve=resolve)


async def credentials_for(
    session: AsyncSession, org_id: str, specs: Iterable[Spec], family: int
) -> dict[str, CredentialRow]:
    """Credential name -> row for every deployment; each must exist in the org with the model's family."""
    found: dict[str, CredentialRow] = {}
    for spec in specs:
        field = f"{spec.where}.credential"
        if spec.credential in found:
            continue
        validation.required(field, spec.credential)
        cred = await credentials.get_by_name(session, org_id, spec.credential)
        if cred is None:
            raise InvalidArgument(field, f"no credential named {spec.credential!r} in org {org_id!r}")
        if cred.family != family:
            raise InvalidArgument(
                field,
                f"credential {spec.credential!r} is for {_family_name(cred.family)},"
                f" the model is {_family_name(family)}",
            )
        found[spec.credential] = cred
    return found


def stored_proxy(row: ModelDeploymentRow, keyring: Keyring) -> str:
    """The deployment's proxy URL with its password (DataLoss when it no longer decrypts)."""
    if row.proxy_kek_id is None or row.proxy_wrapped_dek is None or row.proxy_ciphertext is None:
        return row.proxy_url
    env = Envelope(row.proxy_kek_id, row.proxy_wrapped_dek, row.proxy_ciphertext)
    try:
        return decrypt(keyring, env, row.id).decode("utf-8")
    except (CryptoError, UnicodeDecodeError) as exc:
        raise DataLoss(f"deployment {row.id}: its proxy URL cannot be decrypted: {exc}") from None


def spec_of_row(row: ModelDeploymentRow, credential_name: str, keyring: Keyring, *, only: bool) -> Spec:
    """A stored deployment as a Spec (``only``: the model's single one, named by top-level fields)."""
    try:
        proxy = stored_proxy(row, keyring)
    except DataLoss:
        proxy = row.proxy_url  # compares unequal to any new one, so a new list replaces it
    return Spec(
        name=row.name, base_url=row.base_url, credential=credential_name, upstream_slug=row.upstream_slug,
        timeout_ms=row.timeout_ms, weight=row.weight, priority=row.priority, proxy_url=proxy,
        ca_bundle=row.ca_bundle, where="model" if only else f"model.deployments[{row.name}]",
    )  # fmt: skip


def spec_of_model(row: ModelRow, credential_name: str) -> Spec:
    """A model with no deployment rows (never after migration 0007) as its one deployment."""
    return Spec(
        name=default_name(0), base_url=row.base_url, credential=credential_name,
        upstream_slug=row.upstream_slug, timeout_ms=row.timeout_ms,
    )  # fmt: skip


def keep_passwords(specs: list[Spec], old: Sequence[ModelDeploymentRow], keyring: Keyring) -> list[Spec]:
    """A proxy password given as ``***`` (as the API shows it) keeps the one stored for that deployment."""
    by_name = {row.name: row for row in old}
    out: list[Spec] = []
    for spec in specs:
        proxy = spec.proxy_url
        if validation.has_password(proxy) and urlsplit(proxy).password == MASKED_PASSWORD:
            row = by_name.get(spec.name)
            if row is None or row.proxy_url != proxy or row.proxy_kek_id is None:
                raise InvalidArgument(
                    f"{spec.where}.proxy_url",
                    "'***' stands for the stored password of this deployment's proxy, and it has none"
                    " for this URL; give the password",
                )
            spec = dataclasses.replace(spec, proxy_url=stored_proxy(row, keyring))
        out.append(spec)
    return out


def build_rows(
    specs: Sequence[Spec], creds: dict[str, CredentialRow], keyring: Keyring
) -> list[ModelDeploymentRow]:
    """New rows for ``specs`` (positions and model id are set by the repository)."""
    rows: list[ModelDeploymentRow] = []
    for spec in specs:
        row = ModelDeploymentRow(
            id=ids.new_id(ids.DEPLOYMENT), name=spec.name, base_url=spec.base_url,
            credential_id=creds[spec.credential].id, upstream_slug=spec.upstream_slug,
            timeout_ms=spec.timeout_ms, weight=spec.weight, priority=spec.priority,
            proxy_url=spec.proxy_url, ca_bundle=spec.ca_bundle,
        )  # fmt: skip
        if validation.has_password(spec.proxy_url):
            env = encrypt(keyring, spec.proxy_url.encode("utf-8"), row.id)
            row.proxy_kek_id, row.proxy_wrapped_dek, row.proxy_ciphertext = (
                env.kek_id,
                env.wrapped_dek,
                env.ciphertext,
            )
            row.proxy_url = mask_proxy(spec.proxy_url)
        rows.append(row)
    return rows
