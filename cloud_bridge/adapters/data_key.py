"""The bridge's data key (the envelope key sealing identity keys at rest): from the environment or a
0600 file.

`THRESHOLD_DATA_KEY` (64 hex digits or base64), when set, wins over `[bridge] data_key_file`: a secret
store or systemd's LoadCredential can hand the key over without it ever being on the bridge's disk.
A file that group or others may read is refused. `cloud-bridge create-db` (or `cloud-bridge
data-key`) creates the file; it is never replaced: a new key would leave every sealed key unreadable.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cloud_bridge.core.keyseal import DATA_KEY_BYTES, SealError, data_key_text, parse_data_key
from cloud_bridge.errors import RecordsError
from edge.adapters.keystore import read_secret_file, write_secret_file
from edge.errors import EdgeError

DATA_KEY_ENV = "THRESHOLD_DATA_KEY"
DATA_KEY_FILE_NAME = "bridge-data.key"  # beside the database, by default


@dataclass(frozen=True, slots=True)
class DataKey:
    """The key and where it came from (for error messages; never the key itself)."""

    key: bytes
    source: str

    def __repr__(self) -> str:
        return f"DataKey(source={self.source!r})"


def default_data_key_file(database: Path) -> Path:
    """Where the data key lives when not configured: beside the database."""
    return database.parent / DATA_KEY_FILE_NAME


def load_data_key(path: Path, environ: Mapping[str, str] = os.environ) -> DataKey:
    """The data key from $THRESHOLD_DATA_KEY, else from `path`; RecordsError saying what to do."""
    text = environ.get(DATA_KEY_ENV)
    if text is not None:
        try:
            return DataKey(parse_data_key(text), f"${DATA_KEY_ENV}")
        except SealError as exc:
            raise RecordsError(f"${DATA_KEY_ENV}: {exc.reason}") from None
    try:
        data = read_secret_file(path, "data key")
    except FileNotFoundError:
        raise RecordsError(
            f"{path}: no data key there (it seals the identity keys in the loyalty database); "
            f"set [bridge] data_key_file or ${DATA_KEY_ENV}, or create one with "
            f"`cloud-bridge data-key --key {path}` for a new database"
        ) from None
    except EdgeError as exc:
        raise RecordsError(str(exc)) from None
    try:
        return DataKey(parse_data_key(data.decode("ascii", "replace")), str(path))
    except SealError as exc:
        raise RecordsError(f"{path}: {exc.reason}") from None


def create_data_key_file(path: Path) -> tuple[DataKey, bool]:
    """The data key at `path`, created (0600, hex) if absent; and whether it was created."""
    if path.exists():
        return load_data_key(path, {}), False
    key = secrets.token_bytes(DATA_KEY_BYTES)
    try:
        write_secret_file(path, (data_key_text(key) + "\n").encode("ascii"))
    except EdgeError as exc:
        raise RecordsError(str(exc)) from None
    return DataKey(key, str(path)), True
