"""https upstreams: TLS with SNI and certificate checks, against a local server with a self-signed cert."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from data_plane.upstream import UpstreamUnreachable
from tests.data_plane.upstream.conftest import Run
from tests.data_plane.upstream.server import Server
from tests.data_plane.upstream.test_framing import new_client, read_all


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for "localhost" (and no IP address), with its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def server_context(cert_files: tuple[Path, Path], names: list[str | None]) -> ssl.SSLContext:
    """A server context that records the SNI name of every handshake in ``names``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*cert_files)

    def on_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        names.append(name)

    context.sni_callback = on_sni
    return context


def trusting(cert_files: tuple[Path, Path]) -> ssl.SSLContext:
    """What a deployment passes to trust a private CA: the default checks, one more root."""
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=str(cert_files[0]))
    return context


def test_https_with_sni_and_keep_alive(run: Run[None], cert_files: tuple[Path, Path]) -> None:
    async def scenario() -> None:
        names: list[str | None] = []
        async with Server(ssl_context=server_context(cert_files, names)) as server:
            client = new_client(ssl_context=trusting(cert_files))
            for _ in range(3):
                resp = await client.request("POST", server.url(host="localhost"), {}, b"{}")
                assert resp.status == 200 and await read_all(resp) == b"ok"
                resp.release()
            assert names == ["localhost"] and server.connections == 1
            assert server.requests[0].header("host") == f"localhost:{server.port}"
            await client.close()

    run(scenario())


@pytest.mark.parametrize("case", ["untrusted", "wrong-name"])
def test_certificate_failures_are_unreachable(run: Run[None], cert_files: tuple[Path, Path], case: str) -> None:
    async def scenario() -> None:
        names: list[str | None] = []
        async with Server(ssl_context=server_context(cert_files, names)) as server:
            if case == "untrusted":
                client = new_client()  # the default context: system roots only, the self-signed cert fails
                url = server.url(host="localhost")
            else:
                client = new_client(ssl_context=trusting(cert_files))
                url = server.url(host=str(ipaddress.ip_address("127.0.0.1")))  # not a name the cert holds
            with pytest.raises(UpstreamUnreachable) as caught:
                await client.request("POST", url, {}, b"{}")
            assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
            assert not server.requests and client.status()["in_use"] == 0
            await client.close()

    run(scenario())


def test_default_context_is_built_once_with_certificate_checks(run: Run[None]) -> None:
    async def scenario() -> None:
        client = new_client()
        context = client._ssl_context()
        assert context is client._ssl_context()
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        await client.close()

    run(scenario())
