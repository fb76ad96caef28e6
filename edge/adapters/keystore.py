"""Keys at rest: the gateway's sealed X25519 key and seal key, and the 0600 secret files (issue 4).

What the gateway writes to its card never holds a secret in clear (docs/security.md, "Keys at
rest"). Everything secret is sealed (ChaCha20-Poly1305) with a key derived by HKDF-SHA256 from a
root secret:

- **OTP** (`key_source = "otp"`, or `"auto"` where present): the Raspberry Pi 4/5 customer OTP key,
  read with `rpi-otp-private-key`. It is in the SoC, not on the card: a card alone opens nothing.
- **Key file** (`"file"`, or `"auto"` without OTP): `seal.key`, 32 random bytes, mode 0600, in the
  same data directory. Weaker: whoever copies the card copies the key file with it. It keeps secrets
  out of the database (backups, support bundles, a stray `sqlite3` dump), nothing more.

`gateway.key` holds the gateway's X25519 private key, sealed. A sealed blob says which root sealed it,
so a gateway keeps opening what it wrote even if `"auto"` would choose differently later.

Sealed blob, format 1: b"TSEAL" | 0x01 | source (b"o" OTP, b"f" file) | nonce (12) | ciphertext+tag;
the first 7 bytes and the caller's `purpose` are the associated data, so a blob opens only for what it
was sealed for (the gateway key is not a roster; a roster of another gateway does not open).
"""

from __future__ import annotations

import logging
import os
import secrets
import shlex
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge.adapters.files import read_regular_file
from edge.core import bundle
from edge.errors import EdgeError

_LOGGER = logging.getLogger(__name__)

GATEWAY_KEY_FILE = "gateway.key"
SEAL_KEY_FILE = "seal.key"
SEAL_MAGIC = b"TSEAL"
SEAL_FORMAT = 1
NONCE_LEN = 12
ROOT_LEN = 32
OTP_TIMEOUT_S = 10.0
_HEADER_LEN = len(SEAL_MAGIC) + 2
_HKDF_SALT = b"threshold/at-rest/v1"
_GATEWAY_KEY_PURPOSE = "gateway-key"

KeySource = Literal["otp", "file"]
_SOURCE_BYTES: dict[KeySource, bytes] = {"otp": b"o", "file": b"f"}


class KeystoreError(EdgeError):
    """A key file is missing, unsafe or cannot be opened; retrying cannot help. Says what to do."""


# --- Sealing (pure) -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sealer:
    """Seals and opens secrets at rest with a key derived from one root secret."""

    source: KeySource
    _key: bytes = field(repr=False)

    @classmethod
    def from_root(cls, root: bytes, source: KeySource) -> Sealer:
        """The sealer for a 32-byte root secret (OTP key or key file)."""
        if len(root) != ROOT_LEN:
            raise ValueError(f"a root secret is {ROOT_LEN} bytes, got {len(root)}")
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=b"seal")
        return cls(source, hkdf.derive(root))

    def _header(self) -> bytes:
        return SEAL_MAGIC + bytes([SEAL_FORMAT]) + _SOURCE_BYTES[self.source]

    def seal(self, purpose: str, plaintext: bytes, nonce: bytes | None = None) -> bytes:
        """`plaintext` sealed for `purpose` (a random nonce unless a test gives one)."""
        nonce = os.urandom(NONCE_LEN) if nonce is None else nonce
        if len(nonce) != NONCE_LEN:
            raise ValueError(f"a nonce is {NONCE_LEN} bytes")
        header = self._header()
        aad = header + purpose.encode()
        return header + nonce + ChaCha20Poly1305(self._key).encrypt(nonce, plaintext, aad)

    def open(self, purpose: str, blob: bytes, what: str) -> bytes:
        """The plaintext of a blob sealed for `purpose`; KeystoreError naming `what` otherwise."""
        source = sealed_source(blob, what)
        if source != self.source:
            raise KeystoreError(
                f"{what} was sealed with the {_describe(source)}, not the {_describe(self.source)}"
            )
        header, nonce = blob[:_HEADER_LEN], blob[_HEADER_LEN : _HEADER_LEN + NONCE_LEN]
        try:
            return ChaCha20Poly1305(self._key).decrypt(
                nonce, blob[_HEADER_LEN + NONCE_LEN :], header + purpose.encode()
            )
        except InvalidTag:
            raise KeystoreError(
                f"{what} does not open with this gateway's {_describe(self.source)}: it was sealed "
                "on another device or with another key, or it is damaged"
            ) from None


def sealed_source(blob: bytes, what: str) -> KeySource:
    """Which root sealed `blob`; KeystoreError if it is not a sealed blob of format 1."""
    if len(blob) < _HEADER_LEN + NONCE_LEN + 16 or not blob.startswith(SEAL_MAGIC):
        raise KeystoreError(f"{what} is not a sealed file (damaged, or not written by Threshold)")
    if blob[len(SEAL_MAGIC)] != SEAL_FORMAT:
        raise KeystoreError(
            f"{what} is sealed in format {blob[len(SEAL_MAGIC)]}, this software reads format "
            f"{SEAL_FORMAT}: upgrade Threshold"
        )
    marker = blob[len(SEAL_MAGIC) + 1 : _HEADER_LEN]
    for source, value in _SOURCE_BYTES.items():
        if marker == value:
            return source
    raise KeystoreError(f"{what} names an unknown sealing key {marker!r}")


def _describe(source: KeySource) -> str:
    return "Pi's OTP key" if source == "otp" else f"key file {SEAL_KEY_FILE}"


# --- Secret files -------------------------------------------------------------------------------


def write_secret_file(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 holding `data`, durably; never replaces an existing file."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the data_dir: 0700
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # atomic, and fails if `path` exists: no half-written key file
        finally:
            tmp.unlink()
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except FileExistsError:
        raise KeystoreError(f"{path} already exists; not replaced") from None
    except OSError as exc:
        raise KeystoreError(f"{path}: cannot be written: {exc.strerror}") from None


def read_secret_file(path: Path, what: str) -> bytes:
    """The content of a secret file, refused if group or others may read or write it."""
    try:
        data, st = read_regular_file(path)
        mode = st.st_mode
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise KeystoreError(f"{path} ({what}): cannot be read: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeystoreError(
            f"{path} ({what}) has mode {stat.S_IMODE(mode):04o}: others may read it; "
            f"run `chmod 600 {path}` and check who had access"
        )
    return data


# --- Root secrets ---------------------------------------------------------------------------------


def read_otp_key(command: str, timeout_s: float = OTP_TIMEOUT_S) -> tuple[bytes | None, str]:
    """The Pi's customer OTP key via `command`, or (None, why not). Never logs the key."""
    argv = shlex.split(command)
    if not argv:
        return None, "no OTP command configured"
    try:
        result = subprocess.run(argv, capture_output=True, timeout=timeout_s, check=False)
    except FileNotFoundError:
        return None, f"{argv[0]} is not installed (not a Raspberry Pi 4/5, or rpi-eeprom missing)"
    except subprocess.TimeoutExpired:
        return None, f"{argv[0]} did not answer within {timeout_s:g} s"
    except OSError as exc:
        return None, f"{argv[0]} cannot be run: {exc.strerror}"
    if result.returncode != 0:
        return None, (
            f"{argv[0]} exited with {result.returncode}: the gateway's user needs the 'video' "
            "group to read the OTP (vcmailbox), or lock_device_private_key is set"
        )
    text = result.stdout.decode("ascii", "replace").strip().lower()
    if len(text) != 2 * ROOT_LEN or any(c not in "0123456789abcdef" for c in text):
        return None, f"{argv[0]} printed something other than a {2 * ROOT_LEN}-digit hex key"
    raw = bytes.fromhex(text)
    if raw == bytes(ROOT_LEN):
        return None, "the OTP customer key is not programmed (all zeros)"
    return raw, "OTP"


def _file_root(data_dir: Path, *, create: bool) -> bytes:
    path = data_dir / SEAL_KEY_FILE
    if create and not path.exists():
        write_secret_file(path, os.urandom(ROOT_LEN))
        _LOGGER.info("created seal key file %s (no OTP key: weaker, see docs/security.md)", path)
    try:
        raw = read_secret_file(path, "seal key")
    except FileNotFoundError:
        raise KeystoreError(
            f"{path} (the seal key file) is missing, so the sealed gateway key cannot be opened: "
            "restore it from the card's backup, or re-provision this gateway"
        ) from None
    if len(raw) != ROOT_LEN:
        raise KeystoreError(f"{path} is not a seal key ({len(raw)} bytes, expected {ROOT_LEN})")
    return raw


def _sealer_for(
    source: KeySource, data_dir: Path, otp_command: str, *, create: bool = False
) -> Sealer:
    if source == "file":
        return Sealer.from_root(_file_root(data_dir, create=create), "file")
    root, why = read_otp_key(otp_command)
    if root is None:
        raise KeystoreError(f"the Pi's OTP key cannot be read: {why}")
    return Sealer.from_root(root, "otp")


# --- The gateway's keys ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GatewayKeys:
    """The gateway's X25519 key pair and the sealer for everything else it keeps secret."""

    gateway_key: X25519PrivateKey = field(repr=False)
    sealer: Sealer = field(repr=False)

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte X25519 public key the bridge registers."""
        return bundle.public_key_bytes(self.gateway_key)

    @property
    def key_id(self) -> str:
        return bundle.key_id(self.gateway_key)

    @property
    def source(self) -> KeySource:
        return self.sealer.source


def _choose_source(key_source: str, otp_command: str) -> KeySource:
    if key_source == "file":
        return "file"
    root, why = read_otp_key(otp_command)
    if root is not None:
        return "otp"
    if key_source == "otp":
        raise KeystoreError(
            f"[identity] key_source = 'otp' but the Pi's OTP key cannot be read: {why}. Program "
            "it once (docs/security.md) or set key_source = 'auto' to accept a key file"
        )
    _LOGGER.warning("no OTP key (%s): sealing with a key file, which is weaker", why)
    return "file"


def load_gateway_keys(data_dir: Path, key_source: str, otp_command: str) -> GatewayKeys:
    """Open the sealed gateway key in `data_dir`; KeystoreError saying what to do if it cannot."""
    path = data_dir / GATEWAY_KEY_FILE
    try:
        blob = read_secret_file(path, "gateway key")
    except FileNotFoundError:
        raise KeystoreError(
            f"no gateway key at {path}: run `edge-gateway provision --config FILE` and register "
            "the public key it prints with the bridge (`cloud-bridge add-gateway`)"
        ) from None
    source = sealed_source(blob, str(path))
    if key_source in ("otp", "file") and source != key_source:
        raise KeystoreError(
            f"{path} is sealed with the {_describe(source)} but [identity] key_source is "
            f"{key_source!r}: set key_source = 'auto', or re-provision (remove {GATEWAY_KEY_FILE} "
            f"and {SEAL_KEY_FILE}, run `edge-gateway provision`, register the new key)"
        )
    sealer = _sealer_for(source, data_dir, otp_command)
    raw = sealer.open(_GATEWAY_KEY_PURPOSE, blob, str(path))
    try:
        return GatewayKeys(X25519PrivateKey.from_private_bytes(raw), sealer)
    except ValueError:
        raise KeystoreError(f"{path} does not hold an X25519 key") from None


def provision_gateway_keys(
    data_dir: Path, key_source: str, otp_command: str
) -> tuple[GatewayKeys, bool]:
    """The gateway's keys, created (sealed, 0600) if there are none yet; and whether they were."""
    if (data_dir / GATEWAY_KEY_FILE).exists():
        return load_gateway_keys(data_dir, key_source, otp_command), False
    source = _choose_source(key_source, otp_command)
    sealer = _sealer_for(source, data_dir, otp_command, create=True)
    key = bundle.generate_gateway_key(os.urandom)
    blob = sealer.seal(_GATEWAY_KEY_PURPOSE, bundle.private_key_bytes(key))
    write_secret_file(data_dir / GATEWAY_KEY_FILE, blob)
    return GatewayKeys(key, sealer), True


def load_trusted_signers(
    keys: tuple[str, ...], keys_file: str
) -> tuple[list[Ed25519PublicKey], list[str]]:
    """The bridge public keys a gateway trusts, from config and file; and problems, one per entry."""
    signers: list[Ed25519PublicKey] = []
    problems: list[str] = []
    entries = [(f"[identity] trusted_signers[{i}]", text) for i, text in enumerate(keys)]
    if keys_file:
        try:
            lines = read_regular_file(Path(keys_file))[0].decode("ascii").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{keys_file}: cannot be read: {exc}")
            lines = []
        for number, line in enumerate(lines, 1):
            text = line.split("#", 1)[0].strip()
            if text:
                entries.append((f"{keys_file}:{number}", text))
    for where, text in entries:
        try:
            signers.append(bundle.load_signer_public_key(text, where))
        except bundle.KeyFormatError as exc:
            problems.append(exc.reason)
    return signers, problems


# --- The bridge's signing key ---------------------------------------------------------------------


def create_signing_key_file(path: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The bridge's signing key at `path`, created (0600, base64) if absent; and whether it was."""
    if path.exists():
        return load_signing_key_file(path), False
    key = bundle.generate_signing_key(os.urandom)
    text = bundle.key_to_text(bundle.private_key_bytes(key)) + "\n"
    write_secret_file(path, text.encode("ascii"))
    return key, True


def load_signing_key_file(path: Path) -> Ed25519PrivateKey:
    """The bridge's Ed25519 signing key from its 0600 key file."""
    try:
        data = read_secret_file(path, "bridge signing key")
    except FileNotFoundError:
        raise KeystoreError(
            f"no bridge signing key at {path}: create it with `cloud-bridge keygen --key {path}` "
            "and put the public key it prints in every gateway's [identity] trusted_signers"
        ) from None
    try:
        return bundle.load_signing_key(data, str(path))
    except bundle.KeyFormatError as exc:
        raise KeystoreError(exc.reason) from None
