"""Keys at rest on real files: provisioning, sealing with a fake OTP tool or a key file, file modes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edge.adapters.keystore import (
    GATEWAY_KEY_FILE,
    SEAL_KEY_FILE,
    KeystoreError,
    Sealer,
    create_signing_key_file,
    load_gateway_keys,
    load_signing_key_file,
    load_trusted_signers,
    provision_gateway_keys,
    read_otp_key,
    write_secret_file,
)
from edge.core import bundle

OTP_KEY = bytes.fromhex("5a" * 16 + "c3" * 16)
ABSENT = "/nonexistent/rpi-otp-private-key"


def fake_otp_tool(tmp_path: Path, output: str, exit_code: int = 0, name: str = "otp") -> str:
    """An executable that behaves like `rpi-otp-private-key` with no arguments."""
    script = tmp_path / name
    script.write_text(f"#!/bin/sh\necho '{output}'\nexit {exit_code}\n")
    script.chmod(0o700)
    return str(script)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- Sealing --------------------------------------------------------------------------------------


def test_a_sealed_blob_opens_only_for_its_purpose_and_its_key() -> None:
    sealer = Sealer.from_root(bytes(range(32)), "file")
    blob = sealer.seal("roster/a/s/g", b"secret roster")

    assert sealer.open("roster/a/s/g", blob, "blob") == b"secret roster"
    assert b"secret roster" not in blob
    with pytest.raises(KeystoreError, match="does not open"):
        sealer.open("gateway-key", blob, "blob")
    with pytest.raises(KeystoreError, match="does not open"):
        Sealer.from_root(bytes(32), "file").open("roster/a/s/g", blob, "blob")
    with pytest.raises(KeystoreError, match="sealed with the key file"):
        Sealer.from_root(bytes(range(32)), "otp").open("roster/a/s/g", blob, "blob")
    with pytest.raises(KeystoreError, match="not a sealed file"):
        sealer.open("roster/a/s/g", blob[:20], "blob")


# --- The OTP tool ---------------------------------------------------------------------------------


def test_the_otp_key_is_read_from_the_tool(tmp_path: Path) -> None:
    key, source = read_otp_key(fake_otp_tool(tmp_path, OTP_KEY.hex()))
    assert (key, source) == (OTP_KEY, "OTP")


@pytest.mark.parametrize(
    ("output", "exit_code", "why"),
    [
        ("0" * 64, 0, "not programmed"),
        ("", 1, "'video' group"),
        ("Failed to read", 0, "hex key"),
    ],
)
def test_an_unusable_otp_key_counts_as_none(
    tmp_path: Path, output: str, exit_code: int, why: str
) -> None:
    key, reason = read_otp_key(fake_otp_tool(tmp_path, output, exit_code))
    assert key is None
    assert why in reason


def test_a_missing_otp_tool_counts_as_no_otp() -> None:
    key, reason = read_otp_key(ABSENT)
    assert key is None and "not installed" in reason


# --- Provisioning the gateway ---------------------------------------------------------------------


def test_provisioning_without_otp_seals_the_key_with_a_0600_key_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "threshold"

    keys, created = provision_gateway_keys(data_dir, "auto", ABSENT)

    assert created and keys.source == "file"
    assert mode(data_dir / GATEWAY_KEY_FILE) == 0o600
    assert mode(data_dir / SEAL_KEY_FILE) == 0o600
    private = bundle.private_key_bytes(keys.gateway_key)
    blob = (data_dir / GATEWAY_KEY_FILE).read_bytes()
    assert private not in blob and private.hex().encode() not in blob
    again, created_again = provision_gateway_keys(data_dir, "auto", ABSENT)
    assert not created_again and again.public_key == keys.public_key
    assert load_gateway_keys(data_dir, "auto", ABSENT).key_id == keys.key_id


def test_provisioning_with_otp_leaves_no_key_file_and_the_card_alone_opens_nothing(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "threshold"
    otp = fake_otp_tool(tmp_path, OTP_KEY.hex())

    keys, created = provision_gateway_keys(data_dir, "auto", otp)

    assert created and keys.source == "otp"
    assert sorted(p.name for p in data_dir.iterdir()) == [GATEWAY_KEY_FILE]
    assert load_gateway_keys(data_dir, "otp", otp).public_key == keys.public_key
    # The same card in another Pi: another OTP key, or none.
    other_pi = fake_otp_tool(tmp_path, "a1" * 32, name="other-otp")
    with pytest.raises(KeystoreError, match="does not open"):
        load_gateway_keys(data_dir, "auto", other_pi)
    with pytest.raises(KeystoreError, match="OTP key cannot be read"):
        load_gateway_keys(data_dir, "auto", ABSENT)


def test_key_source_otp_refuses_to_fall_back_to_a_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="key_source = 'otp'"):
        provision_gateway_keys(tmp_path, "otp", ABSENT)
    assert list(tmp_path.iterdir()) == []


def test_a_key_sealed_with_a_file_is_refused_when_the_config_now_says_otp(tmp_path: Path) -> None:
    provision_gateway_keys(tmp_path, "file", ABSENT)
    with pytest.raises(KeystoreError, match="re-provision"):
        load_gateway_keys(tmp_path, "otp", fake_otp_tool(tmp_path, OTP_KEY.hex()))


def test_an_unprovisioned_gateway_is_told_to_run_provision(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="edge-gateway provision"):
        load_gateway_keys(tmp_path, "auto", ABSENT)


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    provision_gateway_keys(tmp_path, "file", ABSENT)
    (tmp_path / SEAL_KEY_FILE).chmod(0o644)
    with pytest.raises(KeystoreError, match="chmod 600"):
        load_gateway_keys(tmp_path, "auto", ABSENT)


def test_a_lost_seal_key_file_is_explained(tmp_path: Path) -> None:
    provision_gateway_keys(tmp_path, "file", ABSENT)
    (tmp_path / SEAL_KEY_FILE).unlink()
    with pytest.raises(KeystoreError, match="seal key file"):
        load_gateway_keys(tmp_path, "auto", ABSENT)


def test_secret_files_are_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    write_secret_file(path, b"first")
    with pytest.raises(KeystoreError, match="already exists"):
        write_secret_file(path, b"second")
    assert path.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]  # no temporary file left


def test_secret_files_are_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_secret_file(tmp_path / "secret", b"x")
    finally:
        os.umask(old)
    assert mode(tmp_path / "secret") == 0o600


# --- Trusted signers and the bridge's key ---------------------------------------------------------


def test_trusted_signers_come_from_config_and_file(tmp_path: Path) -> None:
    first = bundle.generate_signing_key(os.urandom)
    second = bundle.generate_signing_key(os.urandom)
    keys_file = tmp_path / "bridge-keys"
    second_hex = bundle.key_to_text(bundle.public_key_bytes(second), "hex")
    keys_file.write_text(f"# rollover, 2026\n{second_hex}  # new\n\n")
    first_b64 = bundle.key_to_text(bundle.public_key_bytes(first))

    signers, problems = load_trusted_signers((first_b64,), str(keys_file))

    assert problems == []
    assert [bundle.key_id(k) for k in signers] == [bundle.key_id(first), bundle.key_id(second)]


def test_a_bad_trusted_signer_entry_is_named(tmp_path: Path) -> None:
    keys_file = tmp_path / "bridge-keys"
    keys_file.write_text("not-a-key\n")
    signers, problems = load_trusted_signers((), str(keys_file))
    assert signers == []
    assert problems and f"{keys_file}:1" in problems[0]


def test_the_bridge_signing_key_is_created_once_0600(tmp_path: Path) -> None:
    path = tmp_path / "bridge-signing.key"

    key, created = create_signing_key_file(path)
    again, created_again = create_signing_key_file(path)

    assert created and not created_again
    assert mode(path) == 0o600
    assert bundle.key_id(again) == bundle.key_id(key)
    assert bundle.key_id(load_signing_key_file(path)) == bundle.key_id(key)
    with pytest.raises(KeystoreError, match="cloud-bridge keygen"):
        load_signing_key_file(tmp_path / "missing.key")
