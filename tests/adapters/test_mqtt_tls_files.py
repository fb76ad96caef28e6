"""The client's TLS files are checked before any connection: a private key others may read is
refused, as every other key file of Threshold is."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.adapters.mqtt import MqttConfigError, tls_context
from edge.adapters.pki import LocalPki


def test_a_private_key_only_its_owner_may_read_makes_a_context(tmp_path: Path) -> None:
    files = LocalPki(tmp_path / "pki", "acme").client_files("acme/store-001/door-1")
    assert files.key_file.stat().st_mode & 0o777 == 0o600
    assert tls_context(files).minimum_version.name == "TLSv1_2"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_private_key_readable_by_others_is_refused_naming_the_fix(
    tmp_path: Path, mode: int
) -> None:
    files = LocalPki(tmp_path / "pki", "acme").client_files("acme/store-001/door-1")
    files.key_file.chmod(mode)
    with pytest.raises(MqttConfigError, match=rf"chmod 600 {files.key_file}"):
        tls_context(files)
