"""Both planes read the shared settings pieces the same way: the pepper above all,
since a node that decoded it differently would compute digests no key matches."""

from __future__ import annotations

import base64
import os

import pytest

from control_plane import settings as cp_settings
from data_plane import settings as dp_settings
from odock.envconfig import EnvReader, SettingsError, parse_address, parse_pepper

RAW = bytes(range(200, 232)) + b"\xfb\xff"  # bytes whose base64 uses + and / (or - and _)


@pytest.mark.parametrize(
    "spelling",
    [
        base64.b64encode(RAW).decode(),
        base64.b64encode(RAW).decode().rstrip("="),
        base64.urlsafe_b64encode(RAW).decode(),
        base64.urlsafe_b64encode(RAW).decode().rstrip("="),
        "  " + base64.b64encode(RAW).decode() + "\n",
    ],
)
def test_every_spelling_of_the_pepper_gives_the_same_bytes(spelling: str) -> None:
    assert parse_pepper(spelling) == RAW


@pytest.mark.parametrize("bad", ["not base64 at all!", base64.b64encode(RAW).decode() + "*", "AAAA"])
def test_a_malformed_or_short_pepper_is_refused_not_reinterpreted(bad: str) -> None:
    with pytest.raises(SettingsError, match="ODOCK_KEY_PEPPER"):
        parse_pepper(bad)


def test_each_plane_raises_the_shared_error_class() -> None:
    assert cp_settings.SettingsError is SettingsError is dp_settings.SettingsError


def test_secret_from_a_file_and_conflicts(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "token")
    with open(path, "w") as f:
        f.write("from-file\n")
    assert EnvReader({"X_FILE": path}).secret("X") == "from-file"
    with pytest.raises(SettingsError, match="either X or X_FILE"):
        EnvReader({"X": "a", "X_FILE": path}).secret("X")
    with pytest.raises(SettingsError, match="required"):
        EnvReader({}).secret("X")


def test_addresses_are_host_and_port_and_errors_stay_short() -> None:
    assert parse_address("A", "127.0.0.1:0") == "127.0.0.1:0"
    with pytest.raises(SettingsError) as err:
        parse_address("A", "x" * 10_000)
    assert len(str(err.value)) < 120
