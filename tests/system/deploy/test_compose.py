"""deploy/compose.yaml and deploy/haproxy.cfg: valid, wired, and configured only with variables the planes read."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from control_plane.settings import Settings as CpSettings
from data_plane.settings import Settings as DpSettings
from data_plane.settings import Timeouts
from tests.system.deploy.envcheck import DEPLOY, MIGRATE_VARS, PLANE_OF_COMMAND, plane_vars

Compose = dict[str, Any]
ODOCK_IMAGE = "odock:local"
SECRETS_MOUNT = "/run/secrets/"


def compose_schema() -> dict[str, Any]:
    """The compose-spec JSON schema, as vendored by check-jsonschema."""
    ref = resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema: dict[str, Any] = json.loads(ref.read_text(encoding="utf-8"))
    return schema


def odock_services(compose: Compose) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if s.get("image") == ODOCK_IMAGE}


def plane_of(service: dict[str, Any]) -> str:
    return PLANE_OF_COMMAND[service["command"][0]]


def environment(service: dict[str, Any], secrets_dir: Path) -> dict[str, str]:
    """What the container sees: env files (from ``secrets_dir``), then environment; secret paths mapped."""
    env: dict[str, str] = {}
    for env_file in service.get("env_file", []):
        assert env_file.startswith("secrets/"), env_file
        for line in (secrets_dir / env_file.removeprefix("secrets/")).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                key, _, value = line.partition("=")
                env[key] = value
    for key, value in service.get("environment", {}).items():
        assert isinstance(value, str), f"{key}: quote it, YAML would turn {value!r} into a non-string"
        if key.endswith("_FILE") and value.startswith(SECRETS_MOUNT):
            name = value.removeprefix(SECRETS_MOUNT)
            assert name in service.get("secrets", []), f"{key}: secret {name!r} is not mounted in the service"
            value = str(secrets_dir / name)
        env[key] = value
    return env


def test_compose_file_matches_the_compose_spec_schema(compose: Compose) -> None:
    jsonschema.validate(compose, compose_schema())


def test_the_schema_check_can_fail(compose: Compose) -> None:
    broken = {
        **compose,
        "services": {**compose["services"], "lb": {**compose["services"]["lb"], "ports": 8080}},
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, compose_schema())


def test_services_and_their_dependencies(compose: Compose) -> None:
    services = compose["services"]
    assert {"postgres", "migrate", "control-plane", "data-plane", "lb"} <= set(services)
    assert [plane_of(services[n]) for n in ("migrate", "control-plane", "data-plane")] == [
        "migrate", "control_plane", "data_plane"
    ]  # fmt: skip
    assert services["data-plane"]["deploy"]["replicas"] >= 2
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        for dep, cond in svc.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            condition = cond["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], (
                    f"{name} waits for {dep} to be healthy; it has no check"
                )
            elif condition == "service_completed_successfully":
                assert services[dep].get("restart") == "no", f"{dep} is a one-shot and must not restart"
            else:
                assert condition == "service_started"
    assert services["control-plane"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for name, svc in odock_services(compose).items():
        assert svc["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}, name
        assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()


def test_long_running_odock_services_have_healthchecks_and_a_stop_grace(compose: Compose) -> None:
    for name, svc in odock_services(compose).items():
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"], name
        assert any(t.startswith("/tmp") for t in svc["tmpfs"]), name
        assert "no-new-privileges:true" in svc["security_opt"], name
        if plane_of(svc) == "migrate":
            continue
        test = svc["healthcheck"]["test"]
        assert test[:2] == ["CMD", "odock-healthcheck"], name
        grace = float(svc["environment"]["ODOCK_GRACE_SECONDS"])
        stop = svc["stop_grace_period"]
        assert stop.endswith("s") and float(stop[:-1]) > grace, f"{name}: stop_grace_period <= grace"
    assert odock_services(compose)["data-plane"]["healthcheck"]["test"][2:] == [
        "http", "http://127.0.0.1:8080/readyz"
    ]  # fmt: skip


def test_every_odock_variable_set_is_read_by_that_planes_settings(
    compose: Compose, compose_secrets: Path
) -> None:
    for name, svc in odock_services(compose).items():
        plane = plane_of(svc)
        allowed = MIGRATE_VARS if plane == "migrate" else plane_vars(plane).allowed
        names = set(environment(svc, compose_secrets))
        assert {n for n in names if n.startswith("ODOCK_")} <= allowed, f"{name}: {sorted(names - allowed)}"
        if plane != "migrate":
            for secret in plane_vars(plane).required_secrets:
                assert (secret in names) != (f"{secret}_FILE" in names), f"{name}: {secret}"


def test_make_secrets_writes_exactly_what_compose_reads(compose: Compose, compose_secrets: Path) -> None:
    wanted = {s["file"].removeprefix("secrets/") for s in compose["secrets"].values()}
    for svc in compose["services"].values():
        wanted |= {f.removeprefix("secrets/") for f in svc.get("env_file", [])}
        for secret in svc.get("secrets", []):
            assert secret in compose["secrets"]
    assert {p.name for p in compose_secrets.iterdir()} == wanted
    assert compose_secrets.stat().st_mode & 0o777 == 0o700


def test_the_planes_start_from_the_compose_environment_and_generated_secrets(
    compose: Compose, compose_secrets: Path
) -> None:
    services = odock_services(compose)
    cp = CpSettings.from_env(environment(services["control-plane"], compose_secrets))
    dp = DpSettings.from_env(environment(services["data-plane"], compose_secrets))
    migrate_env = environment(services["migrate"], compose_secrets)
    assert cp.migrate is False and cp.database_url == migrate_env["ODOCK_DATABASE_URL"]
    assert cp.database_url.startswith("postgresql://odock:")
    # The generated secrets agree with each other and with the postgres container.
    assert dp.key_pepper == cp.key_pepper and dp.node_token in cp.node_tokens
    password = (compose_secrets / "postgres_password").read_text().strip()
    assert f"odock:{password}@postgres:5432/odock" in cp.database_url
    pg_env = compose["services"]["postgres"]["environment"]
    assert pg_env["POSTGRES_PASSWORD_FILE"] == SECRETS_MOUNT + "postgres_password"
    assert (pg_env["POSTGRES_USER"], pg_env["POSTGRES_DB"]) == ("odock", "odock")
    # The data planes reach the control plane by its service name on its listen port.
    host, _, port = dp.cp_address.rpartition(":")
    assert host == "control-plane" and port == cp.listen.rpartition(":")[2]
    assert dp.workers == 2


# --- HAProxy -------------------------------------------------------------------------------------


def haproxy_sections() -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = ""
    for raw in (DEPLOY / "haproxy.cfg").read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if not line[0].isspace():
            current = line.strip()
            sections[current] = []
        else:
            sections[current].append(line.strip())
    return sections


def _seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", value)
    assert m, value
    return int(m[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 0.001}[m[2]]


def test_load_balancer_is_streaming_friendly_and_checks_readiness(compose: Compose) -> None:
    sections = haproxy_sections()
    defaults = sections["defaults"]
    timeouts = {ln.split()[1]: _seconds(ln.split()[2]) for ln in defaults if ln.startswith("timeout ")}
    # Longer than the data plane's own total request limit: the gateway times out first, with a proper error.
    total = Timeouts().total
    assert timeouts["server"] > total and timeouts["client"] > total
    every_line = [ln for lines in sections.values() for ln in lines]
    assert not [ln for ln in every_line if "http-buffer-request" in ln or "compression" in ln]
    backend = sections["backend data_planes"]
    assert "balance leastconn" in backend and "option httpchk" in backend
    assert any(ln.startswith("http-check send meth GET uri /readyz") for ln in backend)
    (template,) = [ln.split() for ln in backend if ln.startswith("server-template")]
    service, _, port = template[3].partition(":")
    assert service in compose["services"]
    dp_listen = compose["services"][service]["environment"]["ODOCK_DP_LISTEN"]
    assert port == dp_listen.rpartition(":")[2]
    lb = compose["services"]["lb"]
    assert "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in lb["volumes"]
    assert f"bind :{lb['ports'][0].rpartition(':')[2]}" in sections["frontend gateway"]


@pytest.mark.skipif(
    shutil.which("haproxy") is None, reason="haproxy is not installed (apt-get install haproxy)"
)
def test_haproxy_accepts_the_configuration() -> None:
    result = subprocess.run(
        ["haproxy", "-c", "-f", str(DEPLOY / "haproxy.cfg")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr
