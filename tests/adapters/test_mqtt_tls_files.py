"""The client's TLS files are checked before any connection (a private key others may read is
refused, as every other key file of Threshold is), and what a failed handshake means."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from edge.adapters.mqtt import MqttConfigError, MqttConnectFailed, _tls_failure, tls_context
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


@pytest.mark.parametrize(
    ("code", "message"), [(10, "certificate has expired"), (9, "not yet valid")]
)
def test_a_broker_certificate_out_of_its_validity_is_retried_not_fatal(
    code: int, message: str
) -> None:
    # Renewed at the broker, every gateway reconnects by itself; an untrusted one is a config error.
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_code, exc.verify_message = code, message
    failure = _tls_failure(exc, "broker.example:8883")
    assert type(failure) is MqttConnectFailed
    assert message in failure.reason and "cloud-bridge ca server-cert" in failure.reason
    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    untrusted.verify_code, untrusted.verify_message = 20, "unable to get local issuer certificate"
    assert type(_tls_failure(untrusted, "broker.example:8883")) is MqttConfigError
