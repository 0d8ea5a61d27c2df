"""Fixtures for the deployment tests: rendered Kubernetes manifests and the compose file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.system.deploy.envcheck import DEPLOY
from tests.system.deploy.kustomize import Doc, render

K8S = DEPLOY / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "example"


@pytest.fixture(scope="session")
def base_objects() -> list[Doc]:
    """deploy/k8s/base rendered."""
    return render(BASE)


@pytest.fixture(scope="session")
def overlay_objects() -> list[Doc]:
    """deploy/k8s/overlays/example rendered."""
    return render(OVERLAY)


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    """deploy/compose.yaml, anchors and merge keys resolved."""
    with (DEPLOY / "compose.yaml").open(encoding="utf-8") as fh:
        data: dict[str, Any] = yaml.safe_load(fh)
    return data


@pytest.fixture
def compose_secrets(tmp_path: Path) -> Path:
    """A directory filled by deploy/make-secrets (real generated values)."""
    from tests.system.deploy.scripts import run_script

    out = tmp_path / "secrets"
    result = run_script("make-secrets", "--dir", str(out))
    assert result.returncode == 0, result.stderr
    return out
