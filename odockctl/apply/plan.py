"""Compare the validated file with the control plane and produce ordered
steps. Planning only reads; every step that writes is a closure run later
(or never, with --dry-run)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message

from odock.v1 import credentials_pb2, keys_pb2, models_pb2, orgs_pb2
from odockctl import protos
from odockctl.apply.model_plan import model_diff, model_proto
from odockctl.apply.spec import (
    ApplySpec,
    CredentialSpec,
    KeySpec,
    ModelSpec,
    OrgSpec,
)
from odockctl.client import Client
from odockctl.commands.keys import list_keys
from odockctl.errors import UsageError
from odockctl.protos import optional_int
from odockctl.values import family_name, outage_policy_name

_LIMIT_FIELDS = (
    "requests_per_minute",
    "tokens_per_minute",
    "monthly_token_quota",
    "monthly_spend_cap_micros",
)
_KEY_LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute", "budget_micros")


@dataclass
class Created:
    """What a step that creates a virtual key hands back: its id and secret, once."""

    key_id: str
    secret: str


@dataclass
class Step:
    """One resource's planned action; ``run`` is None when nothing needs doing."""

    kind: str
    name: str
    action: str  # created | changed | unchanged | revoked | skipped | revoked elsewhere
    fields: tuple[str, ...] = ()
    run: Callable[[], Created | None] | None = None
    silent: bool = False  # a follow-up write for a resource whose line was already printed
    note: str = ""  # why nothing was done, for the actions that are not plain

    @property
    def line(self) -> str:
        """The line printed for this step."""
        detail = f" ({', '.join(self.fields)})" if self.fields else ""
        note = f": {self.note}" if self.note else ""
        return f"{self.kind} {self.name}: {self.action}{detail}{note}"


@dataclass
class OrgRef:
    """An org's id, known at plan time or filled in when the create step runs."""

    id: str = ""


def _limits_proto(spec_limits: object, names: tuple[str, ...], target: object) -> None:
    for name in names:
        value = getattr(spec_limits, name)
        if value is not None:
            setattr(target, name, value)


_current = optional_int


def _org_proto(spec: OrgSpec) -> orgs_pb2.Org:
    org = orgs_pb2.Org(
        name=spec.name,
        tier=spec.tier,
        outage_policy=protos.outage_policy(spec.outage_policy),
        labels=dict(spec.labels),
    )
    _limits_proto(spec.limits, _LIMIT_FIELDS, org.limits)
    return org


def org_diff(current: orgs_pb2.Org, spec: OrgSpec) -> list[str]:
    """Org fields (update-mask paths) that differ from the file."""
    paths = []
    if current.tier != spec.tier:
        paths.append("tier")
    paths += [f"limits.{n}" for n in _LIMIT_FIELDS if _current(current.limits, n) != getattr(spec.limits, n)]
    if outage_policy_name(current.outage_policy) != outage_policy_name(spec.outage_policy):
        paths.append("outage_policy")
    if dict(current.default_models) != dict(spec.default_models):
        paths.append("default_models")
    if dict(current.labels) != dict(spec.labels):
        paths.append("labels")
    return paths


def _expiry(key: keys_pb2.VirtualKey) -> datetime | None:
    return key.expire_time.ToDatetime(tzinfo=UTC) if key.HasField("expire_time") else None


def key_diff(current: keys_pb2.VirtualKey, spec: KeySpec) -> list[str]:
    """Key fields (update-mask paths) that differ from the file."""
    paths = []
    if current.all_models != spec.all_models or sorted(current.models) != sorted(spec.models):
        paths += ["all_models", "models"]
    if _expiry(current) != spec.expire_time:
        paths.append("expire_time")
    if any(_current(current.limits, n) != getattr(spec.limits, n) for n in _KEY_LIMIT_FIELDS):
        paths.append("limits")
    if dict(current.labels) != dict(spec.labels):
        paths.append("labels")
    return paths


def _key_proto(org_id: str, spec: KeySpec) -> keys_pb2.VirtualKey:
    key = keys_pb2.VirtualKey(
        org_id=org_id,
        name=spec.name,
        all_models=spec.all_models,
        models=list(spec.models),
        labels=dict(spec.labels),
    )
    if spec.expire_time is not None:
        key.expire_time.FromDatetime(spec.expire_time)
    _limits_proto(spec.limits, _KEY_LIMIT_FIELDS, key.limits)
    return key


def _rpc(client: Client, method: Callable[..., object], request: Callable[[], Message]) -> Callable[[], None]:
    """A deferred call; the request is built when it runs (an org id may only exist by then)."""

    def run() -> None:
        client.call(method, request())

    return run


class Planner:
    """Builds the steps for a whole file against one control plane."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def plan(self, spec: ApplySpec) -> list[Step]:
        """Every step, in execution order: per org, the org, credentials, models, keys."""
        if spec.orgs:
            tiers = self.client.call(self.client.orgs.ListTiers, orgs_pb2.ListTiersRequest()).tiers
            known = [t.name for t in tiers]
            for org in spec.orgs:
                if org.tier not in known:
                    raise UsageError(
                        f"{spec.source}: {org.path}.tier: unknown tier {org.tier!r} (control plane has: "
                        f"{', '.join(known)})"
                    )
        steps: list[Step] = []
        for org in spec.orgs:
            steps += self._org(org)
        return steps

    def _org(self, spec: OrgSpec) -> list[Step]:
        c = self.client
        current = c.find_org(spec.name)
        ref = OrgRef(id=current.id if current else "")
        steps: list[Step] = []
        late: list[Step] = []
        if current is None:

            def create() -> None:
                ref.id = c.call(c.orgs.CreateOrg, orgs_pb2.CreateOrgRequest(org=_org_proto(spec))).id

            steps.append(Step("org", spec.name, "created", run=create))
            changed = ["default_models"] if spec.default_models else []
        else:
            changed = org_diff(current, spec)
            now = [p for p in changed if p != "default_models"]
            if now:
                org = _org_proto(spec)
                org.id = current.id
                request = orgs_pb2.UpdateOrgRequest(org=org, update_mask=FieldMask(paths=now))
                steps.append(
                    Step(
                        "org",
                        spec.name,
                        "changed",
                        tuple(changed),
                        run=_rpc(c, c.orgs.UpdateOrg, lambda: request),
                    )
                )
            else:
                steps.append(Step("org", spec.name, "changed" if changed else "unchanged", tuple(changed)))
        if "default_models" in changed:
            # After the models exist: the control plane checks default model names against them.
            late.append(
                Step(
                    "org",
                    spec.name,
                    "changed",
                    silent=True,
                    run=_rpc(
                        c,
                        c.orgs.UpdateOrg,
                        lambda: orgs_pb2.UpdateOrgRequest(
                            org=orgs_pb2.Org(id=ref.id, default_models=dict(spec.default_models)),
                            update_mask=FieldMask(paths=["default_models"]),
                        ),
                    ),
                )
            )
        existing_creds = self._credentials(ref.id) if current else {}
        steps += [
            self._credential(spec.name, ref, cs, existing_creds.get(cs.name)) for cs in spec.credentials
        ]
        existing_models = self._models(ref.id) if current else {}
        for ms in spec.models:
            step, after = self._model(spec.name, ref, ms, existing_models.get(ms.name))
            steps.append(step)
            late += [after] if after is not None else []
        existing_keys = {k.name: k for k in list_keys(c, ref.id, include_revoked=True)} if current else {}
        steps += [self._key(spec.name, ref, ks, existing_keys.get(ks.name)) for ks in spec.keys]
        return steps + late

    def _credentials(self, org_id: str) -> dict[str, credentials_pb2.Credential]:
        c = self.client
        creds = c.pages(
            c.credentials.ListCredentials,
            lambda t, n: credentials_pb2.ListCredentialsRequest(org_id=org_id, page_size=n, page_token=t),
            lambda r: iter(r.credentials),
        )
        return {cred.name: cred for cred in creds}

    def _models(self, org_id: str) -> dict[str, models_pb2.Model]:
        c = self.client
        models = c.pages(
            c.models.ListModels,
            lambda t, n: models_pb2.ListModelsRequest(org_id=org_id, page_size=n, page_token=t),
            lambda r: iter(r.models),
        )
        return {m.name: m for m in models}

    def _credential(
        self, org: str, ref: OrgRef, spec: CredentialSpec, current: credentials_pb2.Credential | None
    ) -> Step:
        c, name = self.client, f"{org}/{spec.name}"
        if current is None:
            return Step(
                "credential",
                name,
                "created",
                run=_rpc(
                    c,
                    c.credentials.CreateCredential,
                    lambda: credentials_pb2.CreateCredentialRequest(
                        org_id=ref.id, name=spec.name, family=protos.family(spec.family), secret=spec.secret
                    ),
                ),
            )
        if current.family != spec.family:
            raise UsageError(
                f"credential {name}: the control plane has family {family_name(current.family)}, "
                f"the file says {family_name(spec.family)}; a credential cannot change family "
                "(use a new name)"
            )
        # The control plane withholds last4 for short secrets: then a change cannot be seen.
        differs = bool(current.last4) and current.last4 != spec.secret[-4:]
        rotate = spec.rotate == "always" or (spec.rotate == "on_change" and differs)
        if not rotate:
            return Step("credential", name, "unchanged")
        return Step(
            "credential",
            name,
            "changed",
            ("secret",),
            run=_rpc(
                c,
                c.credentials.RotateCredential,
                lambda: credentials_pb2.RotateCredentialRequest(
                    org_id=ref.id, name=spec.name, secret=spec.secret
                ),
            ),
        )

    def _model(
        self, org: str, ref: OrgRef, spec: ModelSpec, current: models_pb2.Model | None
    ) -> tuple[Step, Step | None]:
        """The model's step, and the one setting its fallbacks once every model of the file exists."""
        c, name = self.client, f"{org}/{spec.name}"

        def fallbacks() -> models_pb2.UpdateModelRequest:
            return models_pb2.UpdateModelRequest(
                model=models_pb2.Model(org_id=ref.id, name=spec.name, fallbacks=spec.fallbacks),
                update_mask=FieldMask(paths=["fallbacks"]),
            )

        late = Step("model", name, "changed", silent=True, run=_rpc(c, c.models.UpdateModel, fallbacks))
        if current is None:

            def create() -> models_pb2.CreateModelRequest:
                model = model_proto(ref.id, spec)
                model.ClearField("fallbacks")
                return models_pb2.CreateModelRequest(model=model)

            run = _rpc(c, c.models.CreateModel, create)
            return Step("model", name, "created", run=run), late if spec.fallbacks else None
        paths = model_diff(current, spec)
        if not paths:
            return Step("model", name, "unchanged"), None
        now = [p for p in paths if p != "fallbacks"]
        request = models_pb2.UpdateModelRequest(
            model=model_proto(ref.id, spec, collapse=True), update_mask=FieldMask(paths=now)
        )
        update = _rpc(c, c.models.UpdateModel, lambda: request) if now else None
        return Step(
            "model", name, "changed", tuple(paths), run=update
        ), late if "fallbacks" in paths else None

    def _key(self, org: str, ref: OrgRef, spec: KeySpec, current: keys_pb2.VirtualKey | None) -> Step:
        c, name = self.client, f"{org}/{spec.name}"
        if spec.revoked:
            return self._revoked_key(ref, name, current)
        if current is None:

            def create() -> Created:
                r = c.call(
                    c.keys.CreateVirtualKey, keys_pb2.CreateVirtualKeyRequest(key=_key_proto(ref.id, spec))
                )
                return Created(key_id=r.key.id, secret=r.secret)

            return Step("key", name, "created", run=create)
        if current.revoked:
            # Revoked elsewhere (odockctl key revoke, another file): report it and apply the rest.
            return Step(
                "key",
                name,
                "revoked elsewhere",
                note="left revoked (a revoked key cannot come back: say revoked: true, or use a new name)",
            )
        paths = key_diff(current, spec)
        if not paths:
            return Step("key", name, "unchanged")
        key = _key_proto(ref.id, spec)
        key.id = current.id
        request = keys_pb2.UpdateVirtualKeyRequest(key=key, update_mask=FieldMask(paths=paths))
        shown = tuple(dict.fromkeys("scope" if p in ("all_models", "models") else p for p in paths))
        return Step("key", name, "changed", shown, run=_rpc(c, c.keys.UpdateVirtualKey, lambda: request))

    def _revoked_key(self, ref: OrgRef, name: str, current: keys_pb2.VirtualKey | None) -> Step:
        """A key the file says is revoked: revoke it once; never create one just to revoke it."""
        if current is None:
            return Step("key", name, "skipped", note="revoked: true and not on the control plane")
        if current.revoked:
            return Step("key", name, "unchanged")
        c, key_id = self.client, current.id
        return Step(
            "key",
            name,
            "revoked",
            run=_rpc(
                c, c.keys.RevokeVirtualKey, lambda: keys_pb2.RevokeVirtualKeyRequest(org_id=ref.id, id=key_id)
            ),
        )
