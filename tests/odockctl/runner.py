"""Run ``odockctl`` as a real subprocess against a control-plane process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from odock.v1 import (
    credentials_pb2,
    credentials_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    orgs_pb2,
    orgs_pb2_grpc,
)

BIN = Path(sys.executable).parent
RUN_TIMEOUT_S = 60


def console_script(name: str, module: str) -> list[str]:
    """The installed console script, or ``python -m module`` when not installed."""
    script = BIN / name
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


ODOCKCTL = console_script("odockctl", "odockctl.main")
ODOCK = console_script("odock", "odockctl.local")


@dataclass(frozen=True)
class Result:
    """Exit status and output of one invocation."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def lines(self) -> list[str]:
        return self.out.splitlines()


def assert_one_line_error(result: Result, code: int, *needles: str) -> str:
    """Non-zero exit, nothing on stdout, exactly one ``odockctl: error:`` line naming the problem."""
    assert result.code == code, result
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("odockctl: error: "), lines[0]
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@dataclass
class Ctl:
    """An ``odockctl`` bound to one control plane (address and admin token in the env)."""

    address: str
    token: str
    base_env: dict[str, str] = field(default_factory=dict)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ODOCK_")}
        env.update({"ODOCK_CP_ADDRESS": self.address, "ODOCK_ADMIN_TOKEN": self.token})
        env.update(self.base_env)
        env.update(extra or {})
        return env

    def run(
        self, *args: str, env: Mapping[str, str] | None = None, stdin: str = "", cwd: Path | None = None
    ) -> Result:
        """Run and capture; never raises on a non-zero exit."""
        proc = subprocess.run(
            [*ODOCKCTL, *args], input=stdin, capture_output=True, text=True, env=self.env(env),
            timeout=RUN_TIMEOUT_S, cwd=cwd, check=False,
        )  # fmt: skip
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, env: Mapping[str, str] | None = None, stdin: str = "") -> Result:
        """Run and require exit 0 with an empty stderr."""
        result = self.run(*args, env=env, stdin=stdin)
        assert result.code == 0, result
        assert result.err == "", result.err
        return result

    def json(self, *args: str, env: Mapping[str, str] | None = None, stdin: str = "") -> Any:
        """Run with --json and parse stdout."""
        return self.ok("--json", *args, env=env, stdin=stdin).json()

    def state(self) -> dict[str, Any]:
        """Everything the admin API shows (read in-process over gRPC), for before/after comparisons."""
        return admin_state(self.address, self.token)


def admin_state(address: str, token: str) -> dict[str, Any]:
    """Every org with its credentials, models and keys (revoked too), as proto-named JSON data."""
    meta = (("authorization", f"Bearer {token}"),)
    with grpc.insecure_channel(address) as channel:
        orgs = (
            orgs_pb2_grpc.OrgServiceStub(channel)
            .ListOrgs(orgs_pb2.ListOrgsRequest(page_size=1000), metadata=meta, timeout=30)
            .orgs
        )
        creds = credentials_pb2_grpc.CredentialServiceStub(channel)
        models = models_pb2_grpc.ModelServiceStub(channel)
        keys = keys_pb2_grpc.VirtualKeyServiceStub(channel)
        state: dict[str, Any] = {"orgs": [_dict(o) for o in orgs]}
        for org in orgs:
            state[org.name] = {
                "credentials": [_dict(c) for c in creds.ListCredentials(credentials_pb2.ListCredentialsRequest(
                    org_id=org.id, page_size=1000), metadata=meta, timeout=30).credentials],
                "models": [_dict(m) for m in models.ListModels(models_pb2.ListModelsRequest(
                    org_id=org.id, page_size=1000), metadata=meta, timeout=30).models],
                "keys": [_dict(k) for k in keys.ListVirtualKeys(keys_pb2.ListVirtualKeysRequest(
                    org_id=org.id, page_size=1000, include_revoked=True), metadata=meta, timeout=30).keys],
            }  # fmt: skip
    return state


def _dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)
