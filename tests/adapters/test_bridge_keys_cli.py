"""`cloud-bridge keygen / add-gateway / gateways / remove-gateway` on real files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cloud_bridge.cli import main
from edge.cli import main as gateway_main
from edge.core import bundle

STORE = "store-001"


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "loyalty.db"
    assert main(["seed", str(path), "--members", "3", "--seed", "1", "--store", STORE]) == 0
    return path


def output(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0) -> str:
    capsys.readouterr()
    assert main(list(argv)) == code
    captured = capsys.readouterr()
    return captured.out + captured.err


def test_keygen_creates_a_0600_key_once_and_prints_what_gateways_trust(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "bridge-signing.key"

    first = output(capsys, "keygen", "--key", str(key_file))
    second = output(capsys, "keygen", "--key", str(key_file))

    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    public = first.split("public key: ")[1].split()[0]
    assert "created (mode 0600)" in first and "exists, kept" in second
    assert f"public key: {public}" in second
    assert f'trusted_signers = ["{public}"]' in first
    signer = bundle.load_signing_key(key_file.read_bytes())
    assert bundle.key_to_text(bundle.public_key_bytes(signer)) == public
    assert bundle.key_to_text(bundle.private_key_bytes(signer)) not in first + second


def test_a_provisioned_gateway_is_registered_listed_and_removed(
    tmp_path: Path, database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[gateway]\ndata_dir = "{tmp_path / "gw"}"\n[identity]\nkey_source = "file"\n'
    )
    capsys.readouterr()
    assert gateway_main(["provision", "--config", str(config)]) == 0
    printed = capsys.readouterr().out
    public = printed.split("public key: ")[1].split()[0]
    key_id = printed.split("key id:")[1].split()[0]

    added = output(capsys, "add-gateway", str(database), STORE, "door-1", "--public-key", public)
    again = output(capsys, "add-gateway", str(database), STORE, "door-1", "--public-key", public)
    listed = output(capsys, "gateways", str(database))
    removed = output(capsys, "remove-gateway", str(database), STORE, "door-1")

    assert f"gateway {STORE}/door-1: added (key id {key_id})" in added
    assert "unchanged" in again
    assert listed.strip() == f"{STORE}\tdoor-1\t{key_id}"
    assert "removed" in removed
    assert output(capsys, "gateways", str(database)).strip() == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["store-001", "door-1", "--public-key", "not-a-key"], "not a key"),
        (["Store 1", "door-1", "--public-key", "AA" * 32], "not a valid id"),
        (["store-404", "door-1", "--public-key", "AA" * 32], "add-store"),
    ],
)
def test_add_gateway_explains_what_is_wrong(
    database: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert message in output(capsys, "add-gateway", str(database), *argv, code=2)


def test_a_gateways_csr_is_signed_at_registration_and_installed_on_the_gateway(
    tmp_path: Path, database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_dir = tmp_path / "ca"
    assert "CA created" in output(capsys, "ca", "init", "--dir", str(ca_dir), "--chain", "acme")
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[gateway]\nchain = "acme"\nstore = "{STORE}"\nid = "door-1"\n'
        f'data_dir = "{tmp_path / "gw"}"\n[identity]\nkey_source = "file"\n'
    )
    capsys.readouterr()
    assert gateway_main(["provision", "--config", str(config)]) == 0
    printed = capsys.readouterr().out
    public = printed.split("public key: ")[1].split()[0]
    csr = tmp_path / "gw" / "tls" / "client.csr"
    assert f"CSR:        {csr} (CN acme/{STORE}/door-1)" in printed
    cert = tmp_path / "door-1.crt"
    register = ["add-gateway", str(database), STORE, "door-1", "--chain", "acme"]
    signing = ["--public-key", public, "--csr", str(csr), "--ca-dir", str(ca_dir)]

    # A CSR is signed only for the gateway it names; nothing is registered otherwise.
    wrong = [*register[:3], "door-9", *register[4:], *signing, "--cert-out", str(cert)]
    refused = output(capsys, *wrong, code=2)
    assert "CN is 'acme/store-001/door-1'" in refused and "door-9" in refused
    assert not cert.exists()
    assert output(capsys, "gateways", str(database), "--chain", "acme").strip() == ""

    added = output(capsys, *register, *signing, "--cert-out", str(cert))
    assert "added" in added and "edge-gateway install-cert door-1.crt" in added

    capsys.readouterr()
    install = ["install-cert", str(cert), "--ca", str(ca_dir / "ca.crt"), "--config", str(config)]
    assert gateway_main(install) == 0
    installed = tmp_path / "gw" / "tls" / "client.crt"
    assert installed.read_bytes() == cert.read_bytes()
    assert (tmp_path / "gw" / "tls" / "ca.crt").read_bytes() == (ca_dir / "ca.crt").read_bytes()

    # A certificate for another key is refused at installation.
    other = tmp_path / "other"
    assert output(
        capsys,
        "ca",
        "client-cert",
        "--dir",
        str(ca_dir),
        "--chain",
        "acme",
        "--kind",
        "monitor",
        "--name",
        "it",
        "--out",
        str(other),
    )
    capsys.readouterr()
    assert gateway_main([*install[:1], str(other / "client.crt"), *install[2:]]) == 2
    assert "not for this gateway's key" in capsys.readouterr().err


def test_a_reserved_store_id_cannot_be_registered(
    database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["add-gateway", str(database), "shopper", "door-1", "--public-key", "AA" * 32]
    assert "reserved" in output(capsys, *argv, code=2)


def test_ca_init_refuses_a_chain_that_is_not_an_id_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_dir = tmp_path / "ca"
    said = output(capsys, "ca", "init", "--dir", str(ca_dir), "--chain", "Bad Chain", code=2)
    assert "chain 'Bad Chain' is not a valid id" in said
    assert not ca_dir.exists()
