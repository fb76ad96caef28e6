"""Certificates on disk: the chain CA, signing, a gateway's TLS key and CSR, installing its cert.

Crypto with `cryptography` (EC P-256, SHA-256); naming and lifetimes come from
edge/core/broker_identity.py. Private keys are written 0600 and never replaced; the CA's directory
is 0700. Every error is a PkiError saying which file and what to do.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge.adapters.files import read_regular_file
from edge.core.broker_identity import (
    CA_VALIDITY_DAYS,
    CLIENT_VALIDITY_DAYS,
    SERVER_VALIDITY_DAYS,
    BrokerIdentity,
    IdentityError,
    check_gateway_common_name,
)
from edge.core.wire import GatewayAddress
from edge.errors import EdgeError

CA_KEY_NAME = "ca.key"
CA_CERT_NAME = "ca.crt"
#: Where a gateway keeps its broker credentials, under its data_dir.
GATEWAY_TLS_DIR = "tls"
#: Where a bridge keeps its own, beside its database: not GATEWAY_TLS_DIR, which a gateway sharing
#: the host and the state directory (a pilot on one Pi) already uses for its key.
BRIDGE_TLS_DIR = "bridge-tls"
CLIENT_KEY_NAME = "client.key"
CLIENT_CSR_NAME = "client.csr"
CLIENT_CERT_NAME = "client.crt"
#: Clocks of freshly booted devices lag: a certificate is valid from a little before it was made.
_BACKDATE = datetime.timedelta(minutes=5)


class PkiError(EdgeError):
    """A certificate, key or CSR could not be made, read or accepted; `reason` says what to do."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A client's PEM files: the CA to trust, its certificate and its private key."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def new_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write `key` as PEM, mode 0600 from the start; never replaces an existing file."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise PkiError(f"{path} exists: it is never replaced; move it away first") from None
    except OSError as exc:
        raise PkiError(f"{path}: cannot create the key file: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def write_public_file(path: Path, data: bytes) -> None:
    """Write a certificate or CSR (public data), replacing it atomically."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        raise PkiError(f"{path}: cannot write it: {exc.strerror}") from None


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError as exc:
        raise PkiError(f"{path} is not a PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{path} is not an EC private key")
    return key


def load_certificate(path: Path) -> x509.Certificate:
    data = _read(path, "certificate")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise PkiError(f"{path} is not a PEM certificate: {exc}") from None


def common_name(name: x509.Name) -> str:
    found = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(found[0].value) if found else ""


class CertificateAuthority:
    """A chain's CA: its key and self-signed certificate; signs server and client certificates."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, where: Path):
        self.key = key
        self.cert = cert
        self.where = where

    @property
    def cert_path(self) -> Path:
        return self.where / CA_CERT_NAME

    @classmethod
    def init(
        cls, directory: Path, chain: str, *, now: datetime.datetime | None = None
    ) -> CertificateAuthority:
        """Create the CA in `directory` (0700; key 0600); refuses if a CA key is already there."""
        key_path = directory / CA_KEY_NAME
        if key_path.exists():
            raise PkiError(
                f"{key_path} exists: a CA is already set up there and is never replaced "
                "(every certificate it signed would stop working)"
            )
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(directory, 0o700)
        except OSError as exc:
            raise PkiError(f"{directory}: cannot create the CA directory: {exc.strerror}") from None
        now = now or datetime.datetime.now(datetime.UTC)
        key = new_private_key()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Threshold"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"Threshold CA {chain}"),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=CA_VALIDITY_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private_key(key_path, key)
        write_public_file(directory / CA_CERT_NAME, cert.public_bytes(serialization.Encoding.PEM))
        return cls(key, cert, directory)

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        if not (directory / CA_KEY_NAME).exists():
            raise PkiError(
                f"{directory}: no CA there ({CA_KEY_NAME} missing): create it with "
                f"`cloud-bridge ca init --dir {directory}`"
            )
        return cls(
            load_private_key(directory / CA_KEY_NAME),
            load_certificate(directory / CA_CERT_NAME),
            directory,
        )

    def issue(
        self,
        public_key: ec.EllipticCurvePublicKey,
        cn: str,
        *,
        server_names: Sequence[str] = (),
        now: datetime.datetime | None = None,
    ) -> x509.Certificate:
        """A certificate for `public_key` named `cn`: serverAuth with SANs when `server_names` are
        given (host names or IP addresses), else clientAuth."""
        now = now or datetime.datetime.now(datetime.UTC)
        server = bool(server_names)
        days = SERVER_VALIDITY_DAYS if server else CLIENT_VALIDITY_DAYS
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(
                min(
                    now + datetime.timedelta(days=days),
                    self.cert.not_valid_after_utc,
                )
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(n) for n in server_names]),
                critical=False,
            )
        return builder.sign(self.key, hashes.SHA256())

    def issue_files(
        self,
        cn: str,
        cert_path: Path,
        key_path: Path,
        *,
        server_names: Sequence[str] = (),
    ) -> x509.Certificate:
        """A new key (0600, never replaced) and its certificate, written to the given paths."""
        key = new_private_key()
        cert = self.issue(key.public_key(), cn, server_names=server_names)
        write_private_key(key_path, key)
        write_public_file(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return cert

    def sign_gateway_csr(self, csr_pem: bytes, address: GatewayAddress, where: str) -> bytes:
        """Check the CSR (well-formed, self-signed, EC, CN = the gateway's) and sign it (PEM)."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise PkiError(f"{where} is not a PEM certificate request: {exc}") from None
        if not csr.is_signature_valid:
            raise PkiError(f"{where}: the request's signature does not verify; make it again")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise PkiError(
                f"{where}: the request's key is not an EC key; use `edge-gateway provision`"
            )
        try:
            check_gateway_common_name(common_name(csr.subject), address)
        except IdentityError as exc:
            raise PkiError(f"{where}: {exc.reason}") from None
        cert = self.issue(public_key, common_name(csr.subject))
        return cert.public_bytes(serialization.Encoding.PEM)

    def verify(self, cert: x509.Certificate) -> bool:
        """True if `cert` was signed by this CA."""
        try:
            cert.verify_directly_issued_by(self.cert)
        except (InvalidSignature, ValueError, TypeError):
            return False
        return True


def gateway_tls_files(data_dir: Path) -> TlsFiles:
    """Where a gateway keeps its broker credentials by default."""
    return tls_files_in(data_dir / GATEWAY_TLS_DIR)


def bridge_tls_files(state_dir: Path) -> TlsFiles:
    """Where a bridge keeps its broker credentials by default: not the gateway's tls/, so that a
    bridge and a gateway on one host never share (and overwrite) a key."""
    return tls_files_in(state_dir / BRIDGE_TLS_DIR)


def tls_files_in(directory: Path) -> TlsFiles:
    """The CA, certificate and key files `[mqtt]` looks for in `directory`."""
    return TlsFiles(
        directory / CA_CERT_NAME, directory / CLIENT_CERT_NAME, directory / CLIENT_KEY_NAME
    )


def make_gateway_csr(data_dir: Path, identity: BrokerIdentity) -> tuple[Path, bool]:
    """Create the gateway's TLS key (0600) once, and (re)write its CSR; return (CSR path, created)."""
    tls_dir = data_dir / GATEWAY_TLS_DIR
    try:
        tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise PkiError(f"{tls_dir}: cannot create it: {exc.strerror}") from None
    key_path = tls_dir / CLIENT_KEY_NAME
    created = not key_path.exists()
    if created:
        write_private_key(key_path, new_private_key())
    key = load_private_key(key_path)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.common_name)]))
        .sign(key, hashes.SHA256())
    )
    csr_path = tls_dir / CLIENT_CSR_NAME
    write_public_file(csr_path, csr.public_bytes(serialization.Encoding.PEM))
    return csr_path, created


def install_gateway_certificate(
    data_dir: Path, cert_pem: bytes, ca_pem: bytes, identity: BrokerIdentity, where: str
) -> TlsFiles:
    """Check that the certificate is for this gateway's key and CN and was signed by the CA given,
    then write both next to the key."""
    files = gateway_tls_files(data_dir)
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise PkiError(f"{where} is not a PEM certificate: {exc}") from None
    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
    except ValueError as exc:
        raise PkiError(f"the CA certificate is not PEM: {exc}") from None
    if not files.key_file.exists():
        raise PkiError(
            f"{files.key_file} missing: run `edge-gateway provision` first, then have the CSR signed"
        )
    key = load_private_key(files.key_file)
    if cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise PkiError(
            f"{where} is not for this gateway's key {files.key_file}: sign this gateway's CSR "
            f"({files.key_file.with_name(CLIENT_CSR_NAME)})"
        )
    if common_name(cert.subject) != identity.common_name:
        raise PkiError(
            f"{where} names {common_name(cert.subject)!r}, this gateway is {identity.common_name!r}"
        )
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        raise PkiError(f"{where} was not signed by the CA certificate given") from None
    write_public_file(files.cert_file, cert_pem)
    write_public_file(files.ca_file, ca_pem)
    return files


class LocalPki:
    """A CA in a directory that issues a broker certificate and one certificate per identity on
    demand, each written once and reused: the tests' and the demo's certificates."""

    def __init__(self, directory: Path, chain: str = "threshold") -> None:
        self.directory = directory
        if (directory / CA_KEY_NAME).exists():
            self.ca = CertificateAuthority.load(directory)
        else:
            self.ca = CertificateAuthority.init(directory, chain)

    @property
    def ca_file(self) -> Path:
        return self.ca.cert_path

    def server_files(self, names: Sequence[str] = ("localhost", "127.0.0.1")) -> TlsFiles:
        """The broker's certificate and key (SANs `names`)."""
        label = "server-" + "-".join(n.replace(":", "_") for n in names)
        return self._files(label, "threshold-broker", names)

    def client_files(self, identity: BrokerIdentity | str) -> TlsFiles:
        """A client certificate and key for `identity` (a BrokerIdentity or any CN)."""
        cn = identity.common_name if isinstance(identity, BrokerIdentity) else identity
        return self._files("client-" + cn.replace("/", "_"), cn, ())

    def _files(self, label: str, cn: str, server_names: Sequence[str]) -> TlsFiles:
        files = TlsFiles(
            self.ca_file, self.directory / f"{label}.crt", self.directory / f"{label}.key"
        )
        if not files.cert_file.exists():
            with contextlib.suppress(FileNotFoundError):
                files.key_file.unlink()  # a key without its certificate: a run interrupted
            self.ca.issue_files(cn, files.cert_file, files.key_file, server_names=server_names)
        return files


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _read(path: Path, what: str) -> bytes:
    try:
        return read_regular_file(path)[0]
    except FileNotFoundError:
        raise PkiError(f"{path}: no {what} there; check the path") from None
    except OSError as exc:
        raise PkiError(f"{path}: cannot read the {what}: {exc.strerror}") from None
