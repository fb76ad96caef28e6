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
