"""Which ODOCK_* variables each plane reads, taken from its settings.py source (plus odock.envconfig).

``Settings.from_env`` reads variables through ``env.secret`` (required; ``X`` or
``X_FILE``), ``env.plain``, ``env.number`` and ``env.path``. Parsing those calls
gives the exact set a deployment may set, so a variable a manifest sets but no
plane reads (a typo, a removed setting) fails the tests.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
_CALL = re.compile(r"env\.(secret|plain|number|path)\(\s*\"(ODOCK_[A-Z0-9_]+)\"")
_ANY = re.compile(r"\bODOCK_[A-Z0-9_]*[A-Z0-9]\b")


@dataclass(frozen=True)
class PlaneVars:
    """The variables one plane reads."""

    plane: str
    required_secrets: frozenset[str]
    optional: frozenset[str]

    @property
    def allowed(self) -> frozenset[str]:
        """Every name a deployment may set for this plane (secrets also as *_FILE)."""
        files = {f"{s}_FILE" for s in self.required_secrets}
        return self.required_secrets | files | self.optional


# Read by both planes through the shared package (the log settings).
SHARED_SETTINGS = REPO / "odock" / "envconfig.py"


def plane_vars(plane: str) -> PlaneVars:
    """Parse ``<plane>/settings.py`` and the shared ``odock.envconfig`` for the variables it reads."""
    source = (REPO / plane / "settings.py").read_text(encoding="utf-8") + SHARED_SETTINGS.read_text(
        encoding="utf-8"
    )
    required: set[str] = set()
    optional: set[str] = set()
    for kind, name in _CALL.findall(source):
        (required if kind == "secret" else optional).add(name)
    return PlaneVars(plane, frozenset(required), frozenset(optional))


def cli_vars() -> frozenset[str]:
    """Variables odockctl reads (odockctl/settings.py), for prose in deploy/."""
    source = (REPO / "odockctl" / "settings.py").read_text(encoding="utf-8")
    return frozenset(re.findall(r"environ\.get\(\s*\"(ODOCK_[A-Z0-9_]+)\"", source))


def mentioned(text: str) -> set[str]:
    """Every ODOCK_* name in a text."""
    return set(_ANY.findall(text))


# Commands of the image and which plane's settings they are configured by. odock-migrate
# reads only the control plane's ODOCK_DATABASE_URL (deploy/bin/odock-migrate).
PLANE_OF_COMMAND = {"control-plane": "control_plane", "data-plane": "data_plane", "odock-migrate": "migrate"}
MIGRATE_VARS = frozenset({"ODOCK_DATABASE_URL"})


@dataclass(frozen=True)
class DummySecrets:
    """Valid, mutually consistent values for every secret key the manifests use."""

    keks: str
    pepper: str
    admin_token: str
    node_token: str

    @classmethod
    def fresh(cls) -> DummySecrets:
        """New random values."""
        return cls(
            keks="kek-test=" + base64.b64encode(secrets.token_bytes(32)).decode("ascii"),
            pepper=base64.b64encode(secrets.token_bytes(32)).decode("ascii"),
            admin_token="adm-" + secrets.token_urlsafe(32),
            node_token="node-" + secrets.token_urlsafe(32),
        )

    def for_key(self, key: str, tmp: Path) -> str:
        """The value for a Secret key of deploy/k8s (an unknown key is a test failure)."""
        values: Mapping[str, str] = {
            "keks": self.keks,
            "key-pepper": self.pepper,
            "admin-token": self.admin_token,
            "node-tokens": self.node_token,
            "node-token": self.node_token,
            "url": f"sqlite:///{tmp / 'odock.db'}",
        }
        if key not in values:
            raise AssertionError(f"secret key {key!r} has no known meaning; extend DummySecrets")
        return values[key]
