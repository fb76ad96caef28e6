"""The chain CA on real files: what its certificates say, and the CSRs it refuses."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge.adapters.pki import (
    CertificateAuthority,
    PkiError,
    make_gateway_csr,
    new_private_key,
)
from edge.core.broker_identity import CLIENT_VALIDITY_DAYS, gateway_identity
from edge.core.wire import GatewayAddress

DOOR = GatewayAddress("acme", "store-001", "door-1")


def usages(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_the_ca_is_made_once_with_private_modes(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca", "acme")
    assert stat.S_IMODE((tmp_path / "ca").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode) == 0o600
    assert ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    with pytest.raises(PkiError, match="never replaced"):
        CertificateAuthority.init(tmp_path / "ca", "acme")
    assert CertificateAuthority.load(tmp_path / "ca").cert == ca.cert


def test_server_and_client_certificates_carry_their_usage_names_and_validity(
    tmp_path: Path,
) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca", "acme")
    now = datetime.datetime.now(datetime.UTC)
    server = ca.issue(
        new_private_key().public_key(), "broker", server_names=("mq.example", "10.0.0.5")
    )
    client = ca.issue(new_private_key().public_key(), "acme/bridge/bridge-1")
    assert usages(server) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert usages(client) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["mq.example"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    lifetime = client.not_valid_after_utc - now
    assert datetime.timedelta(days=CLIENT_VALIDITY_DAYS - 1) < lifetime
    assert lifetime <= datetime.timedelta(days=CLIENT_VALIDITY_DAYS)
    assert ca.verify(server) and ca.verify(client)


def test_a_gateway_csr_is_signed_only_for_that_gateway(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca", "acme")
    csr_path, created = make_gateway_csr(tmp_path / "gw", gateway_identity(DOOR))
    assert created
    assert stat.S_IMODE((tmp_path / "gw" / "tls" / "client.key").stat().st_mode) == 0o600
    again, created_again = make_gateway_csr(tmp_path / "gw", gateway_identity(DOOR))
    assert again == csr_path and not created_again  # the key is kept

    cert = x509.load_pem_x509_certificate(ca.sign_gateway_csr(csr_path.read_bytes(), DOOR, "csr"))
    assert (
        cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "acme/store-001/door-1"
    )
    assert usages(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    for other in (
        GatewayAddress("acme", "store-001", "door-2"),
        GatewayAddress("acme", "store-002", "door-1"),
        GatewayAddress("globex", "store-001", "door-1"),
    ):
        with pytest.raises(PkiError, match="CN is"):
            ca.sign_gateway_csr(csr_path.read_bytes(), other, "csr")
    with pytest.raises(PkiError, match="not a PEM certificate request"):
        ca.sign_gateway_csr(b"garbage", DOOR, "csr")


def test_a_csr_with_a_broken_signature_is_refused(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca", "acme")
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme/store-001/door-1")])
    )
    good = builder.sign(new_private_key(), hashes.SHA256())
    # Another key's signature (ECDSA signatures vary in length: pick one of the same length).
    forged = next(
        sig
        for sig in (builder.sign(new_private_key(), hashes.SHA256()).signature for _ in range(64))
        if len(sig) == len(good.signature)
    )
    der = good.public_bytes(serialization.Encoding.DER)
    pem = x509.load_der_x509_csr(der[: -len(forged)] + forged).public_bytes(
        serialization.Encoding.PEM
    )
    with pytest.raises(PkiError, match="signature"):
        ca.sign_gateway_csr(pem, DOOR, "csr")
