"""The edge-gateway command as an installer meets it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.cli import main

EXAMPLE = Path(__file__).parents[2] / "firmware_config" / "gateway.example.toml"


def test_check_config_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE)]) == 0
    assert "OK (gateway threshold/v1/demo-chain/store-001/door-1)" in capsys.readouterr().out


def test_check_config_names_file_field_and_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "gateway.toml"
    bad.write_text("[presence]\nenter_dbm = 'loud'\n")
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: [presence.enter_dbm] must be a number, got 'loud'" in err


def test_run_refuses_a_bad_config_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "gateway.toml"
    bad.write_text("[radio]\nsource = 'wifi'\n")
    assert main(["run", "--config", str(bad)]) == 2
    assert "[radio.source]" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("time_s", "expected"), [("0", "a9b76a71c5f89290"), ("2000", "4144413e45fefa58")]
)
def test_tools_eid_prints_the_published_vectors(
    time_s: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "0102030405060708090a111213141516"
    assert main(["tools", "eid", "--identity-key", key, "--exponent", "10", "--time", time_s]) == 0
    assert capsys.readouterr().out.strip() == expected


def test_tools_eid_explains_a_bad_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tools", "eid", "--identity-key", "0102", "--exponent", "10", "--time", "0"]) == 2
    assert "identity key must be 16 bytes" in capsys.readouterr().err


def gateway_config(tmp_path: Path, identity: str = "") -> Path:
    """A gateway config whose data_dir is in tmp_path and whose keys are sealed with a key file."""
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[gateway]\ndata_dir = "{tmp_path / "state"}"\n[identity]\nkey_source = "file"\n{identity}'
    )
    return path


def test_provision_prints_the_public_key_and_the_line_to_run_on_the_bridge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = gateway_config(tmp_path)

    assert main(["provision", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    public = out.split("public key: ")[1].split()[0]
    assert "key created, sealed with the key file" in out
    assert "weaker" in out
    assert "cloud-bridge add-gateway /var/lib/threshold/loyalty.sqlite store-001 door-1 " in out
    assert f"--public-key {public}" in out
    assert "trusted_signers" in out  # the config does not trust a bridge yet

    assert main(["provision", "--config", str(config)]) == 0
    again = capsys.readouterr().out
    assert "already provisioned" in again and f"public key: {public}" in again
    private_files = sorted(p.name for p in (tmp_path / "state").iterdir())
    assert private_files == ["gateway.key", "seal.key", "tls"]
    assert sorted(p.name for p in (tmp_path / "state" / "tls").iterdir()) == [
        "client.csr",
        "client.key",
    ]
    assert (tmp_path / "state" / "tls" / "client.key").stat().st_mode & 0o777 == 0o600
    assert "--csr client.csr" in out


def test_run_without_a_provisioned_key_says_how_to_provision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    config = gateway_config(tmp_path, f'trusted_signers = ["{signer}"]\n')

    assert main(["run", "--config", str(config)]) == 2
    assert "edge-gateway provision" in capsys.readouterr().err


def test_run_without_a_trusted_bridge_key_refuses_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = gateway_config(tmp_path)
    main(["provision", "--config", str(config)])
    capsys.readouterr()

    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "[identity.trusted_signers]" in err and "cloud-bridge keygen" in err


def test_check_config_notes_a_missing_trusted_signer(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE)]) == 0
    assert "trusted_signers is empty" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("radio", "beacon", "noted"),
    [("bleak", "false", True), ("bleak", "true", False), ("simulated", "false", False)],
)
def test_check_config_notes_iphone_check_in_without_the_store_beacon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], radio: str, beacon: str, noted: bool
) -> None:
    config = tmp_path / "gateway.toml"
    uuid = "e2c56db5dffb48d2b060d0f5a71096e0"
    config.write_text(
        f"[radio]\nsource = '{radio}'\n[store_beacon]\nenabled = {beacon}\nuuid = '{uuid}'\n"
    )
    assert main(["check-config", str(config)]) == 0
    assert ("[store_beacon] is off" in capsys.readouterr().out) is noted
