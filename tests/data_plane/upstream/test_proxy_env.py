"""The proxy environment (HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY) and proxy URLs, parsed like curl and requests."""

from __future__ import annotations

import base64

import pytest

from data_plane.settings import Settings, SettingsError
from data_plane.upstream.network import ENVIRONMENT, Network
from data_plane.upstream.proxy import EnvironmentProxies, NoProxy, deployment_proxy, parse_proxy

SECRETS = {"ODOCK_NODE_TOKEN": "n" * 40, "ODOCK_KEY_PEPPER": base64.b64encode(b"p" * 32).decode()}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_proxy_url_credentials_are_percent_decoded_and_never_in_repr() -> None:
    proxy = parse_proxy("http://us%40er:p%3Ass%20w@proxy.corp:3128", checked=False)
    assert (proxy.host, proxy.port, proxy.address) == ("proxy.corp", 3128, "proxy.corp:3128")
    assert proxy.authorization == basic("us@er", "p:ss w")
    assert "p:ss" not in repr(proxy) and "cDpzcyB3" not in repr(proxy)
    assert parse_proxy("proxy.corp:8080", checked=False).port == 8080  # no scheme: http
    assert parse_proxy("http://[::1]:3128/", checked=True).address == "[::1]:3128"
    assert parse_proxy("http://proxy.corp", checked=False).port == 80
    assert parse_proxy("http://user@proxy.corp:1", checked=False).authorization == basic("user", "")


@pytest.mark.parametrize(
    "url",
    ["https://u:secret@proxy:443", "socks5://u:secret@proxy:1080", "http://u:secret@proxy:99999",
     "http://u:secret@proxy:1/path", "http://u:secret@:1", "http://u:secret@proxy:1?q=1"],
)  # fmt: skip
def test_unusable_proxy_urls_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ValueError, match=r"prox") as caught:
        parse_proxy(url, checked=True)
    assert "secret" not in str(caught.value)
    with pytest.raises(ValueError) as again:
        deployment_proxy(url)
    assert "secret" not in str(again.value)


def test_lower_case_wins_and_all_proxy_fills_in() -> None:
    env = EnvironmentProxies.from_environ(
        {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2", "ALL_PROXY": "http://all:3"}
    )
    assert env.https is not None and env.https.address == "lower:2"
    assert env.http is not None and env.http.address == "all:3"  # no HTTP_PROXY: ALL_PROXY
    assert EnvironmentProxies.from_environ({"HTTPS_PROXY": "http://upper:1", "https_proxy": ""}).https is None
    assert EnvironmentProxies.from_environ({"HTTP_PROXY": "http://upper:1"}).http is not None
    assert not EnvironmentProxies.from_environ({}).configured


@pytest.mark.parametrize(
    ("spec", "host", "port", "bypass"),
    [
        ("example.com", "example.com", 443, True),
        ("example.com", "api.example.com", 443, True),
        (".example.com", "api.example.com", 443, True),
        (".example.com", "example.com", 443, True),  # curl: the leading dot is ignored
        ("*.example.com", "a.b.example.com", 443, True),
        ("example.com", "notexample.com", 443, False),
        ("example.com", "example.com.evil", 443, False),
        (" foo , Example.COM. ", "EXAMPLE.com", 443, True),
        ("example.com:8443", "example.com", 8443, True),
        ("example.com:8443", "example.com", 443, False),
        ("10.0.0.0/8", "10.20.30.40", 80, True),
        ("10.0.0.0/8", "11.0.0.1", 80, False),
        ("10.0.0.0/8", "ten.internal", 80, False),
        ("127.0.0.1", "127.0.0.1", 80, True),
        ("127.0.0.1:8080", "127.0.0.1", 80, False),
        ("::1", "::1", 443, True),
        ("[::1]:443", "::1", 443, True),
        ("fd00::/8", "fd12::5", 443, True),
        ("*", "anything.at.all", 1, True),
        ("localhost", "127.0.0.1", 80, False),  # names and addresses are not resolved into each other
        ("", "example.com", 443, False),
        ("a:b:c", "a", 443, False),
    ],
)
def test_no_proxy_rules(spec: str, host: str, port: int, bypass: bool) -> None:
    assert NoProxy(spec).matches(host, port) is bypass


def test_environment_decision_per_origin() -> None:
    env = EnvironmentProxies.from_environ(
        {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "internal.corp,10.0.0.0/8"}
    )
    assert env.for_origin("https://api.openai.com:443", "api.openai.com", 443, True) is env.https
    assert env.for_origin("https://vllm.internal.corp:443", "vllm.internal.corp", 443, True) is None
    assert env.for_origin("https://10.1.1.1:443", "10.1.1.1", 443, True) is None
    assert env.for_origin("http://api.openai.com:80", "api.openai.com", 80, False) is None  # no HTTP_PROXY


def test_settings_read_the_proxy_environment_once_and_refuse_a_bad_one_without_its_value() -> None:
    settings = Settings.from_env({**SECRETS, "https_proxy": "http://u:pw@proxy.corp:3128", "NO_PROXY": "*"})
    assert settings.proxies is not None and settings.proxies.https is not None
    assert settings.proxies.secrets() == [basic("u", "pw")]
    assert Settings.from_env(SECRETS).proxies is None
    with pytest.raises(SettingsError, match="^HTTPS_PROXY: only http:// proxies") as caught:
        Settings.from_env({**SECRETS, "HTTPS_PROXY": "socks5://u:hunter2@proxy:1080"})
    assert "hunter2" not in str(caught.value)


def test_network_key_is_computed_once_and_never_holds_the_password() -> None:
    network = Network("http://u:hunter2@proxy:1", "")
    assert network.key and "hunter2" not in network.key and "hunter2" not in repr(network)
    assert (
        network.key
        == Network("http://u:hunter2@proxy:1", "").key
        != Network("http://u:other@proxy:1", "").key
    )
    assert ENVIRONMENT.key == "" and Network("", "PEM").key != Network("direct", "PEM").key
