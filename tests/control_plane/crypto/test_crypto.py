"""Envelope encryption: round trip, tamper, row swap, unknown KEK, rotation + rewrap."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from control_plane.crypto import (
    CryptoError,
    Envelope,
    Keyring,
    KeyringError,
    decrypt,
    encrypt,
    generate_kek_spec,
    rewrap,
)

SECRET = b"sk-proj-THIS-IS-A-PROVIDER-KEY-1234"


def _kek(byte: int) -> str:
    return base64.b64encode(bytes([byte]) * 32).decode()


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.from_spec(f"old={_kek(1)},new={_kek(2)}")


def _with(env: Envelope, field: str, blob: bytes) -> Envelope:
    if field == "wrapped_dek":
        return dataclasses.replace(env, wrapped_dek=blob)
    return dataclasses.replace(env, ciphertext=blob)


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def test_round_trip_uses_newest_kek_and_fresh_dek(keyring: Keyring) -> None:
    env = encrypt(keyring, SECRET, "cred_a")
    assert env.kek_id == "new"
    assert SECRET not in env.ciphertext and SECRET not in env.wrapped_dek
    assert decrypt(keyring, env, "cred_a") == SECRET
    again = encrypt(keyring, SECRET, "cred_a")
    # Fresh DEK and nonces: nothing repeats between two encryptions of the same secret.
    assert again.wrapped_dek != env.wrapped_dek and again.ciphertext != env.ciphertext


@pytest.mark.parametrize("field", ["wrapped_dek", "ciphertext"])
def test_one_byte_tamper_anywhere_fails(keyring: Keyring, field: str) -> None:
    env = encrypt(keyring, SECRET, "cred_a")
    blob: bytes = getattr(env, field)
    for index in range(len(blob)):  # nonce, body and tag bytes alike
        bad = _with(env, field, _flip(blob, index))
        with pytest.raises(CryptoError):
            decrypt(keyring, bad, "cred_a")


@pytest.mark.parametrize("field", ["wrapped_dek", "ciphertext"])
def test_truncated_or_empty_blob_fails(keyring: Keyring, field: str) -> None:
    env = encrypt(keyring, SECRET, "cred_a")
    for bad_blob in (b"", getattr(env, field)[:-1], getattr(env, field)[:20]):
        with pytest.raises(CryptoError):
            decrypt(keyring, _with(env, field, bad_blob), "cred_a")


def test_row_swap_fails(keyring: Keyring) -> None:
    a = encrypt(keyring, SECRET, "cred_a")
    b = encrypt(keyring, b"sk-other-secret", "cred_b")
    with pytest.raises(CryptoError):
        decrypt(keyring, a, "cred_b")  # the whole envelope copied onto another row
    with pytest.raises(CryptoError):
        decrypt(keyring, Envelope(b.kek_id, b.wrapped_dek, a.ciphertext), "cred_b")  # only the ciphertext
    with pytest.raises(CryptoError):
        decrypt(keyring, Envelope(a.kek_id, a.wrapped_dek, b.ciphertext), "cred_a")  # only the DEK kept


def test_relabelled_kek_id_fails() -> None:
    # Both KEKs identical: only the associated data can tell the ids apart.
    same = Keyring.from_spec(f"k1={_kek(7)},k2={_kek(7)}")
    env = encrypt(same, SECRET, "cred_a")
    with pytest.raises(CryptoError):
        decrypt(same, dataclasses.replace(env, kek_id="k1"), "cred_a")


def test_unknown_kek_fails(keyring: Keyring) -> None:
    env = encrypt(keyring, SECRET, "cred_a")
    only_old = Keyring.from_spec(f"old={_kek(1)}")
    with pytest.raises(CryptoError, match="unknown KEK id 'new'"):
        decrypt(only_old, env, "cred_a")
    wrong_key = Keyring.from_spec(f"new={_kek(9)}")
    with pytest.raises(CryptoError):
        decrypt(wrong_key, env, "cred_a")


def test_rotation_then_rewrap_moves_every_secret_to_newest() -> None:
    v1 = Keyring.from_spec(f"v1={_kek(1)}")
    rows = {f"cred_{i}": f"sk-secret-{i}".encode() for i in range(5)}
    stored = {rid: encrypt(v1, secret, rid) for rid, secret in rows.items()}
    assert {env.kek_id for env in stored.values()} == {"v1"}

    v2 = Keyring.from_spec(f"v1={_kek(1)},v2={_kek(2)}")
    assert all(decrypt(v2, env, rid) == rows[rid] for rid, env in stored.items())  # old KEK still decrypts
    moved = {rid: rewrap(v2, env, rid) for rid, env in stored.items()}
    assert {env.kek_id for env in moved.values()} == {"v2"}
    assert all(moved[rid].ciphertext == stored[rid].ciphertext for rid in rows)  # same DEK, secret untouched

    v2_only = Keyring.from_spec(f"v2={_kek(2)}")  # v1 retired
    assert all(decrypt(v2_only, env, rid) == rows[rid] for rid, env in moved.items())
    assert all(rewrap(v2_only, env, rid) is env for rid, env in moved.items())  # already on newest


def test_rewrap_refuses_a_damaged_row() -> None:
    v1 = Keyring.from_spec(f"v1={_kek(1)}")
    env = encrypt(v1, SECRET, "cred_a")
    v2 = Keyring.from_spec(f"v1={_kek(1)},v2={_kek(2)}")
    with pytest.raises(CryptoError):
        rewrap(v2, dataclasses.replace(env, ciphertext=_flip(env.ciphertext, 20)), "cred_a")
    with pytest.raises(CryptoError):
        rewrap(v2, env, "cred_b")


def test_encrypt_refuses_empty_input(keyring: Keyring) -> None:
    with pytest.raises(ValueError):
        encrypt(keyring, b"", "cred_a")
    with pytest.raises(ValueError):
        encrypt(keyring, SECRET, "")


def test_keyring_spec_order_and_lookup() -> None:
    spec = f"{generate_kek_spec('a')},{generate_kek_spec('b')} , {generate_kek_spec('c.2024-01')}"
    ring = Keyring.from_spec(spec)
    assert ring.ids == ("a", "b", "c.2024-01")
    assert ring.newest_id == "c.2024-01"
    assert len(ring.get("a")) == 32 and "b" in ring and "zz" not in ring
    with pytest.raises(CryptoError):
        ring.get("zz")
    # URL-safe alphabet and missing padding are accepted.
    raw = bytes(range(256))[-32:]
    urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert Keyring.from_spec(f"u={urlsafe}").get("u") == raw


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "at least one KEK"),
        (" , ", "at least one KEK"),
        ("justsomething", "entry #1: must look like kid=BASE64"),
        (f"={_kek(1)}", "must look like kid=BASE64"),
        ("a=", "must look like kid=BASE64"),
        (f"bad id={_kek(1)}", "id must match"),
        (f"a={_kek(1)},b={_kek(2)},a={_kek(3)}", "entry #3: id repeats KEK entry #1"),
        ("a=" + base64.b64encode(b"x" * 16).decode(), "must decode to 32 bytes, got 16"),
        ("a=" + base64.b64encode(b"x" * 33).decode(), "must decode to 32 bytes, got 33"),
        ("a=not*base64!", "not valid base64"),
    ],
)
def test_keyring_spec_errors_are_clear(spec: str, message: str) -> None:
    with pytest.raises(KeyringError, match=message):
        Keyring.from_spec(spec)


def test_errors_and_reprs_never_echo_key_material() -> None:
    secret_b64 = base64.b64encode(b"\xab" * 31).decode()  # wrong size: rejected
    with pytest.raises(KeyringError) as info:
        Keyring.from_spec(f"k={secret_b64}")
    assert secret_b64 not in str(info.value)
    pasted_key = _kek(5)
    with pytest.raises(KeyringError) as info:
        Keyring.from_spec(pasted_key)  # a bare key without "kid="
    assert pasted_key[:12] not in str(info.value)
    with pytest.raises(KeyringError) as info:
        Keyring.from_spec(f"k={pasted_key[:-3]}*")  # a key with a typo
    assert pasted_key[:12] not in str(info.value)
    ring = Keyring.from_spec(f"k={_kek(3)}")
    env = encrypt(ring, SECRET, "cred_a")
    assert _kek(3) not in repr(ring)
    assert env.ciphertext.hex() not in repr(env) and repr(env.ciphertext) not in repr(env)


def test_generate_kek_spec_is_random_and_valid() -> None:
    a, b = generate_kek_spec("k"), generate_kek_spec("k")
    assert a != b
    assert len(Keyring.from_spec(a).get("k")) == 32
    with pytest.raises(KeyringError):
        generate_kek_spec("bad id")
