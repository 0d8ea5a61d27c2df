"""deploy/k8s: schema-valid, hardened, probed, and configured only with variables the planes read."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from control_plane.dbcheck import LIVENESS_SERVICE
from control_plane.settings import Settings as CpSettings
from control_plane.settings import SettingsError as CpSettingsError
from data_plane.settings import Settings as DpSettings
from data_plane.settings import SettingsError as DpSettingsError
from tests.system.deploy.conftest import BASE, OVERLAY
from tests.system.deploy.envcheck import MIGRATE_VARS, PLANE_OF_COMMAND, DummySecrets, plane_vars
from tests.system.deploy.k8s_env import resolve, secret_value
from tests.system.deploy.kustomize import Doc, pod_templates

# The oldest Kubernetes we claim (grpc probes are GA since 1.27; 1.29 is the oldest
# still widely run) and the newest schema kubernetes-validate ships.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


def one(objects: list[Doc], kind: str, name: str) -> Doc:
    hits = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} objects"
    return hits[0]


def containers(objects: list[Doc]) -> Iterator[tuple[Doc, Doc, Doc]]:
    """(workload, pod spec, container) for every container of every workload."""
    for obj in objects:
        for pod in pod_templates(obj):
            for c in [*pod.get("initContainers", []), *pod["containers"]]:
                yield obj, pod, c


def plane_of(container: Doc) -> str:
    command = container.get("command") or container.get("args")
    assert command, f"container {container['name']}: the plane is chosen by command, none given"
    assert command[0] in PLANE_OF_COMMAND, f"unknown command {command[0]!r}"
    return PLANE_OF_COMMAND[command[0]]


def env_names(container: Doc) -> set[str]:
    return {e["name"] for e in container.get("env", [])}


def env_value(container: Doc, name: str) -> str:
    return next(str(e["value"]) for e in container["env"] if e["name"] == name)


def settings_for(plane: str, env: dict[str, str]) -> Any:
    return (CpSettings if plane == "control_plane" else DpSettings).from_env(env)


# --- rendering and schemas --------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("directory", [BASE, OVERLAY], ids=["base", "overlay"])
def test_renderer_matches_kubectl_kustomize(directory: Path, request: pytest.FixtureRequest) -> None:
    ours = request.getfixturevalue("base_objects" if directory == BASE else "overlay_objects")
    out = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    theirs = [d for d in yaml.safe_load_all(out) if d]

    def key(d: Doc) -> tuple[str, str]:
        return d["kind"], d["metadata"]["name"]

    assert sorted(map(key, ours)) == sorted(map(key, theirs))
    by_key = {key(d): d for d in theirs}
    for doc in ours:
        assert doc == by_key[key(doc)], f"{key(doc)} differs from kubectl kustomize"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("which", ["base_objects", "overlay_objects"])
def test_every_object_validates_against_the_kubernetes_schema(
    which: str, version: str, request: pytest.FixtureRequest
) -> None:
    objects: list[Doc] = request.getfixturevalue(which)
    assert objects
    for obj in objects:
        # strict: unknown fields (typos such as "readinesProbe") are errors too.
        kubernetes_validate.validate(obj, version, strict=True)


def test_schema_validation_rejects_a_broken_object(overlay_objects: list[Doc]) -> None:
    broken = dict(one(overlay_objects, "Deployment", "odock-data-plane"))
    broken["spec"] = {**broken["spec"], "replicas": "two"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_the_overlay_has_every_required_object(overlay_objects: list[Doc]) -> None:
    kinds = {(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in overlay_objects}
    for expected in [
        ("apps/v1", "Deployment", "odock-control-plane"),
        ("v1", "Service", "odock-control-plane"),
        ("apps/v1", "Deployment", "odock-data-plane"),
        ("v1", "Service", "odock-data-plane"),
        ("autoscaling/v2", "HorizontalPodAutoscaler", "odock-data-plane"),
        ("policy/v1", "PodDisruptionBudget", "odock-data-plane"),
        ("policy/v1", "PodDisruptionBudget", "odock-control-plane"),
        ("batch/v1", "Job", "odock-migrate"),
        ("v1", "Secret", "odock-keks"),
        ("v1", "Secret", "odock-pepper"),
        ("v1", "Secret", "odock-admin-token"),
        ("v1", "Secret", "odock-node-tokens"),
        ("v1", "Secret", "odock-node-token"),
    ]:
        assert expected in kinds
    assert all(o["metadata"].get("namespace") == "odock" for o in overlay_objects if o["kind"] != "Namespace")


def test_base_has_no_secrets(base_objects: list[Doc]) -> None:
    assert not [o for o in base_objects if o["kind"] == "Secret"]


def test_overlay_sets_a_pinned_image(overlay_objects: list[Doc]) -> None:
    for _, _, c in containers(overlay_objects):
        name, _, tag = c["image"].rpartition(":")
        assert name == "registry.example.com/odock" and tag and tag != "latest"


# --- wiring: selectors, ports, autoscaling, disruption budgets ---------------------------------


def test_services_pdbs_and_hpa_point_at_the_right_pods(overlay_objects: list[Doc]) -> None:
    for plane, port_name in (("control-plane", "grpc"), ("data-plane", "http")):
        dep = one(overlay_objects, "Deployment", f"odock-{plane}")
        labels = dep["spec"]["template"]["metadata"]["labels"]
        svc = one(overlay_objects, "Service", f"odock-{plane}")
        pdb = one(overlay_objects, "PodDisruptionBudget", f"odock-{plane}")
        assert svc["spec"]["selector"].items() <= labels.items()
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
        # The selectors tell the planes apart: no Service routes to the other plane's pods.
        assert svc["spec"]["selector"]["app.kubernetes.io/component"] == plane
        container_ports = {
            p["name"]: p["containerPort"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]
        }
        assert [p["targetPort"] for p in svc["spec"]["ports"]] == [port_name]
        assert port_name in container_ports
    hpa = one(overlay_objects, "HorizontalPodAutoscaler", "odock-data-plane")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "odock-data-plane",
    }
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # The HPA owns the data-plane replica count.
    assert "replicas" not in one(overlay_objects, "Deployment", "odock-data-plane")["spec"]
    assert one(overlay_objects, "Deployment", "odock-control-plane")["spec"]["replicas"] >= 2


def test_listen_ports_match_container_ports_and_the_data_plane_finds_the_control_plane(
    overlay_objects: list[Doc],
) -> None:
    cp = one(overlay_objects, "Deployment", "odock-control-plane")["spec"]["template"]["spec"]["containers"][
        0
    ]
    dp = one(overlay_objects, "Deployment", "odock-data-plane")["spec"]["template"]["spec"]["containers"][0]
    assert int(env_value(cp, "ODOCK_CP_LISTEN").rpartition(":")[2]) == cp["ports"][0]["containerPort"]
    assert int(env_value(dp, "ODOCK_DP_LISTEN").rpartition(":")[2]) == dp["ports"][0]["containerPort"]
    # Every replica through a headless Service (docs/operations.md, "Several control-plane replicas").
    target = env_value(dp, "ODOCK_CP_ADDRESS")
    assert target.startswith("dns:///")
    host, _, port = target.removeprefix("dns:///").rpartition(":")
    svc = one(overlay_objects, "Service", host)
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "control-plane"
    assert int(port) in [p["port"] for p in svc["spec"]["ports"]]


# --- security and resources -------------------------------------------------------------------


@pytest.mark.parametrize("which", ["base_objects", "overlay_objects"])
def test_every_pod_is_non_root_read_only_and_confined(which: str, request: pytest.FixtureRequest) -> None:
    objects: list[Doc] = request.getfixturevalue(which)
    seen = 0
    for _, pod, c in containers(objects):
        seen += 1
        pod_sc, sc = pod.get("securityContext", {}), c.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True and sc.get("runAsNonRoot") is True
        assert pod_sc.get("runAsUser") == 10001 and pod_sc.get("fsGroup") == 10001
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        assert sc.get("readOnlyRootFilesystem") is True
        assert sc.get("allowPrivilegeEscalation") is False
        assert sc.get("capabilities", {}).get("drop") == ["ALL"] and not sc["capabilities"].get("add")
        assert pod.get("automountServiceAccountToken") is False
        tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        assert len(tmp) == 1 and "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp[0]["name"])
        for mount in c.get("volumeMounts", []):
            volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
            # The only writable mounts are emptyDirs; secrets are mounted read-only.
            assert "emptyDir" in volume or mount.get("readOnly") is True, mount
        res = c["resources"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(res[kind]), f"{c['name']}: {kind}"
    assert seen == 3  # control plane, data plane, migrations


def test_namespace_enforces_the_restricted_pod_security_standard(overlay_objects: list[Doc]) -> None:
    ns = one(overlay_objects, "Namespace", "odock")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# --- probes and shutdown ----------------------------------------------------------------------


def test_control_plane_uses_grpc_health_probes(overlay_objects: list[Doc]) -> None:
    pod = one(overlay_objects, "Deployment", "odock-control-plane")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    port = c["ports"][0]["containerPort"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == port
    # Readiness: the server-wide status, NOT_SERVING while the database is unreachable or draining.
    assert c["startupProbe"]["grpc"].get("service", "") == c["readinessProbe"]["grpc"].get("service", "") == ""
    # Liveness: process only, so a database outage never restarts every control plane.
    assert c["livenessProbe"]["grpc"]["service"] == LIVENESS_SERVICE
    grace = float(env_value(c, "ODOCK_GRACE_SECONDS"))
    assert pod["terminationGracePeriodSeconds"] > grace + _prestop_seconds(c)


def test_data_plane_probes_healthz_for_liveness_and_readyz_for_readiness(overlay_objects: list[Doc]) -> None:
    pod = one(overlay_objects, "Deployment", "odock-data-plane")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    grace = float(env_value(c, "ODOCK_GRACE_SECONDS"))
    assert pod["terminationGracePeriodSeconds"] > grace + _prestop_seconds(c)


def _prestop_seconds(container: Doc) -> float:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"  # coreutils of the python:3.11-slim base, no shell needed
    return float(command[1])


# --- environment variables against the planes' settings ----------------------------------------


@pytest.mark.parametrize("which", ["base_objects", "overlay_objects"])
def test_every_odock_variable_set_is_read_by_that_planes_settings(
    which: str, request: pytest.FixtureRequest
) -> None:
    objects: list[Doc] = request.getfixturevalue(which)
    for _, _, c in containers(objects):
        plane = plane_of(c)
        allowed = MIGRATE_VARS if plane == "migrate" else plane_vars(plane).allowed
        odock = {n for n in env_names(c) if n.startswith("ODOCK_")}
        assert odock, c["name"]
        assert odock <= allowed, f"{c['name']}: not read by {plane}: {sorted(odock - allowed)}"


def test_every_required_secret_is_provided(overlay_objects: list[Doc]) -> None:
    for _, _, c in containers(overlay_objects):
        plane = plane_of(c)
        if plane == "migrate":
            assert env_names(c) == {"ODOCK_DATABASE_URL"}
            continue
        names = env_names(c)
        required = plane_vars(plane).required_secrets
        assert required, plane
        for secret in required:
            assert (secret in names) != (f"{secret}_FILE" in names), f"{c['name']}: {secret}"


def test_the_settings_accept_the_rendered_environment(overlay_objects: list[Doc], tmp_path: Path) -> None:
    dummies = DummySecrets.fresh()
    built: dict[str, Any] = {}
    for _, pod, c in containers(overlay_objects):
        plane = plane_of(c)
        resolved = resolve(overlay_objects, pod, c, dummies, tmp_path)
        if plane == "migrate":
            assert resolved.secret_refs == {"ODOCK_DATABASE_URL": ("odock-database", "url")}
            continue
        built[plane] = settings_for(plane, resolved.env)
    cp: CpSettings = built["control_plane"]
    dp: DpSettings = built["data_plane"]
    assert cp.migrate is False  # the Job migrates
    assert cp.listen == "0.0.0.0:50051" and cp.database_url.startswith("sqlite:///")
    assert cp.kek_ids == ("kek-test",) and dp.key_pepper == cp.key_pepper
    assert dp.node_token in cp.node_tokens
    assert dp.workers == 2 and dp.max_staleness == 600.0  # the overlay's patch took effect
    assert dp.node_id == "odock-pod-metadata-name"


def test_data_planes_never_see_control_plane_only_secrets(overlay_objects: list[Doc], tmp_path: Path) -> None:
    pod = one(overlay_objects, "Deployment", "odock-data-plane")["spec"]["template"]["spec"]
    refs = resolve(overlay_objects, pod, pod["containers"][0], DummySecrets.fresh(), tmp_path).secret_refs
    assert {s for s, _ in refs.values()} == {"odock-pepper", "odock-node-token"}
    mounted = str(pod["volumes"])
    assert "odock-keks" not in mounted and "odock-admin-token" not in mounted


PLACEHOLDER_KEYS = [
    ("control_plane", "odock-keks", "keks", "ODOCK_KEKS"),
    ("control_plane", "odock-pepper", "key-pepper", "ODOCK_KEY_PEPPER"),
    ("control_plane", "odock-admin-token", "admin-token", "ODOCK_ADMIN_TOKEN"),
    ("control_plane", "odock-node-tokens", "node-tokens", "ODOCK_NODE_TOKENS"),
    ("data_plane", "odock-pepper", "key-pepper", "ODOCK_KEY_PEPPER"),
    ("data_plane", "odock-node-token", "node-token", "ODOCK_NODE_TOKEN"),
]


@pytest.mark.parametrize(("plane", "secret", "key", "variable"), PLACEHOLDER_KEYS)
def test_example_placeholder_secrets_are_refused_by_the_planes(
    overlay_objects: list[Doc], tmp_path: Path, plane: str, secret: str, key: str, variable: str
) -> None:
    # An example overlay applied unchanged must not yield a gateway with published keys.
    assert "REPLACE-ME" in secret_value(overlay_objects, secret, key)
    deployment = "odock-control-plane" if plane == "control_plane" else "odock-data-plane"
    pod = one(overlay_objects, "Deployment", deployment)["spec"]["template"]["spec"]
    resolved = resolve(overlay_objects, pod, pod["containers"][0], DummySecrets.fresh(), tmp_path,
                       real_key=(secret, key))  # fmt: skip
    error = CpSettingsError if plane == "control_plane" else DpSettingsError
    with pytest.raises(error, match=variable):
        settings_for(plane, resolved.env)
