"""Settings.from_env: defaults, *_FILE secrets, and one-line errors that never echo a secret."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from control_plane.settings import Settings, SettingsError
from tests.support.secrets import PlaneSecrets


def base_env() -> dict[str, str]:
    return PlaneSecrets().control_plane_env()


def test_defaults() -> None:
    s = Settings.from_env(base_env())
    assert s.listen == "127.0.0.1:50051" and s.database_url == "sqlite:///./odock.db"
    assert s.migrate and s.ready_file is None and not s.tls
    assert s.grace_seconds == 10.0 and s.heartbeat_seconds == 5.0
    assert s.kek_ids == ("kek1",) and len(s.key_pepper) == 32 and len(s.node_tokens) == 1


def test_everything_set(tmp_path: Path) -> None:
    cert, key, ca = (tmp_path / n for n in ("c.pem", "k.pem", "ca.pem"))
    for p in (cert, key, ca):
        p.write_text("x")
    k1, k2 = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
    env = base_env() | {
        "ODOCK_CP_LISTEN": "0.0.0.0:0",
        "ODOCK_DATABASE_URL": "postgresql://u@db:5432/odock",
        "ODOCK_KEKS": f"old={k1}, new={k2}",
        "ODOCK_NODE_TOKENS": f"{'a' * 32},{'b' * 40}",
        "ODOCK_TLS_CERT_FILE": str(cert),
        "ODOCK_TLS_KEY_FILE": str(key),
        "ODOCK_TLS_CLIENT_CA_FILE": str(ca),
        "ODOCK_MIGRATE": "off",
        "ODOCK_READY_FILE": str(tmp_path / "ready.json"),
        "ODOCK_GRACE_SECONDS": "2.5",
        "ODOCK_HEARTBEAT_SECONDS": "0.5",
    }
    s = Settings.from_env(env)
    assert s.kek_ids == ("old", "new") and s.keks_spec == f"old={k1},new={k2}"
    assert s.node_tokens == ("a" * 32, "b" * 40)
    assert s.tls and s.tls_client_ca_file == ca and not s.migrate
    assert s.grace_seconds == 2.5 and s.heartbeat_seconds == 0.5


def test_secrets_from_files_and_never_in_repr(tmp_path: Path) -> None:
    env = base_env()
    files = {}
    for name in ("ODOCK_ADMIN_TOKEN", "ODOCK_KEY_PEPPER", "ODOCK_KEKS", "ODOCK_NODE_TOKENS"):
        path = tmp_path / name
        path.write_text(env.pop(name) + "\n")
        files[f"{name}_FILE"] = str(path)
    s = Settings.from_env(env | files)
    text = repr(s)
    for secret in (s.admin_token, s.keks_spec, base64.b64encode(s.key_pepper).decode(), *s.node_tokens):
        assert secret not in text


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ODOCK_ADMIN_TOKEN": ""}, "ODOCK_ADMIN_TOKEN: required (set ODOCK_ADMIN_TOKEN or ODOCK_ADMIN_TOKEN_FILE)"),
        ({"ODOCK_ADMIN_TOKEN_FILE": "/nonexistent/token"}, "ODOCK_ADMIN_TOKEN: set either"),
        ({"ODOCK_KEKS": "nokid"}, "ODOCK_KEKS: entry #1 must look like ID=BASE64"),
        ({"ODOCK_KEKS": "a=" + base64.b64encode(b"k" * 32).decode() + ",a=" + base64.b64encode(b"j" * 32).decode()},
         "ODOCK_KEKS: duplicate KEK id 'a'"),
        ({"ODOCK_KEKS": "a=!!notbase64!!"}, "ODOCK_KEKS: KEK 'a' must be 32 bytes, base64-encoded"),
        ({"ODOCK_KEY_PEPPER": "%%%"}, "ODOCK_KEY_PEPPER: must be base64"),
        ({"ODOCK_NODE_TOKENS": " , "}, "ODOCK_NODE_TOKENS: at least one node token is required"),
        ({"ODOCK_NODE_TOKENS": "x" * 40 + ",short"}, "ODOCK_NODE_TOKENS: token #2 must be at least 32"),
        ({"ODOCK_TLS_KEY_FILE": __file__}, "ODOCK_TLS_CERT_FILE and ODOCK_TLS_KEY_FILE must be set together"),
        ({"ODOCK_TLS_CLIENT_CA_FILE": __file__}, "ODOCK_TLS_CLIENT_CA_FILE: mutual TLS needs ODOCK_TLS_CERT_FILE"),
        ({"ODOCK_GRACE_SECONDS": "soon"}, "ODOCK_GRACE_SECONDS: not a number: 'soon'"),
        ({"ODOCK_HEARTBEAT_SECONDS": "0"}, "ODOCK_HEARTBEAT_SECONDS: must be between"),
        ({"ODOCK_CP_LISTEN": "127.0.0.1:99999"}, "ODOCK_CP_LISTEN: expected HOST:PORT"),
    ],
)  # fmt: skip
def test_errors_are_one_line_and_name_the_variable(changes: dict[str, str], message: str) -> None:
    env = base_env() | changes
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    text = str(err.value)
    assert message in text and "\n" not in text
    for name in ("ODOCK_ADMIN_TOKEN", "ODOCK_KEY_PEPPER", "ODOCK_NODE_TOKENS"):
        if env.get(name):
            for part in env[name].split(","):
                assert len(part) < 8 or part not in text


def test_node_token_must_differ_from_admin_token() -> None:
    env = base_env()
    env["ODOCK_NODE_TOKENS"] = env["ODOCK_ADMIN_TOKEN"]
    with pytest.raises(SettingsError, match="must differ"):
        Settings.from_env(env)
