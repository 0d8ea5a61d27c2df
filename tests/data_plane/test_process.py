"""The data-plane process: settings errors, and (m)TLS to the control plane."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import httpx

from odock import keyformat
from tests.data_plane.helpers import assert_error, chat_call
from tests.support.dataplane import REPO_ROOT, data_plane_env, start_data_plane
from tests.support.planes import start_control_plane
from tests.support.tls_certs import make_pki


def test_bad_settings_exit_2_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    env = data_plane_env("127.0.0.1:1", "node-" + "t" * 40, b"p" * 32, tmp_path / "ready.json")
    env["ODOCK_KEY_PEPPER"] = base64.b64encode(b"short").decode()
    done = subprocess.run([sys.executable, "-m", "data_plane"], env=env, cwd=REPO_ROOT, capture_output=True, check=False,
                          timeout=30)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.decode().strip().splitlines() == [
        "data-plane: ODOCK_KEY_PEPPER: must decode to at least 32 bytes"
    ]


async def test_mutual_tls_to_the_control_plane(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    cp = start_control_plane(f"sqlite:///{tmp_path / 'cp.db'}", extra_env={
        "ODOCK_TLS_CERT_FILE": str(pki.server_cert), "ODOCK_TLS_KEY_FILE": str(pki.server_key),
        "ODOCK_TLS_CLIENT_CA_FILE": str(pki.ca),
    })  # fmt: skip
    with_cert = {"ODOCK_CP_TLS_CA_FILE": str(pki.ca), "ODOCK_CP_TLS_CERT_FILE": str(pki.client_cert),
                 "ODOCK_CP_TLS_KEY_FILE": str(pki.client_key)}  # fmt: skip
    good = start_data_plane(cp.address, cp.node_token, cp.pepper, extra_env=with_cert)
    no_cert = start_data_plane(
        cp.address, cp.node_token, cp.pepper, extra_env={"ODOCK_CP_TLS_CA_FILE": str(pki.ca)}
    )
    try:
        good.wait_connected()
        call = chat_call("openai", "gpt-chat", key=keyformat.generate())
        async with httpx.AsyncClient(timeout=10) as client:
            # an answer from the control plane over mTLS: the key is unknown
            resp = await client.post(good.url + call.path, content=call.body, headers=call.headers)
            assert_error("openai", resp, 401, "invalid_api_key")
            # without a client certificate the control plane is unreachable: fail closed
            assert no_cert.status()["control_plane"] == "disconnected"
            resp = await client.post(no_cert.url + call.path, content=call.body, headers=call.headers)
            assert_error("openai", resp, 503, "control_plane_unavailable")
    finally:
        assert good.stop() == 0 and no_cert.stop() == 0
        cp.stop()
