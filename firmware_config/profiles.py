"""Serial co-processor firmware profiles: coprocessor_profiles.toml → frozen dataclasses, validated once.

Pure (tomllib only). Unknown keys are errors: a typo must not silently drop a field. Every error names
the file, the field and what is expected.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
DEFAULT_PATH = Path(__file__).with_name("coprocessor_profiles.toml")

# The HELLO `caps=` tokens of TSP (serial_protocol.md §4); edge.core.serial_protocol uses the same set.
KNOWN_CAPABILITIES = frozenset({"passive", "active", "coded_phy", "ext_adv"})
LINKS = ("usb-cdc", "uart")
BAUDRATES = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 1000000, 2000000)

_NAME = re.compile(r"[A-Za-z0-9._-]{1,32}")  # the HELLO fw= token
_VERSION = re.compile(r"([0-9]{1,5})\.([0-9]{1,5})\.([0-9]{1,5})")

# field → (TOML type, required)
_FIRMWARE_FIELDS: dict[str, tuple[type, bool]] = {
    "name": (str, True),
    "description": (str, False),
    "min_version": (str, True),
    "protocol": (int, True),
    "link": (str, True),
    "baudrate": (int, True),
    "capabilities": (list, True),
}
_TOP_FIELDS = ("schema_version", "firmware")
_TYPE_NAMES = {str: "a string", int: "an integer", list: "an array"}


class ProfileError(Exception):
    """The profiles file is wrong; retrying cannot help. Names file, field and what is expected."""

    def __init__(self, path: str, field: str, problem: str) -> None:
        super().__init__(f"{path}: [{field}] {problem}")
        self.path = path
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class CoprocessorProfile:
    """One known firmware."""

    name: str
    min_version: tuple[int, int, int]
    protocol: int
    link: str
    baudrate: int
    capabilities: frozenset[str]
    description: str = ""

    @property
    def min_version_text(self) -> str:
        return ".".join(map(str, self.min_version))


def _firmware(raw: object, path: str, where: str) -> CoprocessorProfile:
    if not isinstance(raw, dict):
        raise ProfileError(path, where, "must be a table ([[firmware]])")
    for key in raw:
        if key not in _FIRMWARE_FIELDS:
            known = ", ".join(sorted(_FIRMWARE_FIELDS))
            raise ProfileError(path, f"{where}.{key}", f"unknown key; known: {known}")
    for key, (kind, required) in _FIRMWARE_FIELDS.items():
        if key not in raw:
            if required:
                raise ProfileError(path, f"{where}.{key}", "is required")
            continue
        value = raw[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ProfileError(
                path, f"{where}.{key}", f"must be {_TYPE_NAMES[kind]}, got {value!r}"
            )
    name: str = raw["name"]
    if _NAME.fullmatch(name) is None:
        raise ProfileError(
            path,
            f"{where}.name",
            f"must be 1-32 of A-Z a-z 0-9 . _ - (the HELLO fw=), got {name!r}",
        )
    version = _VERSION.fullmatch(raw["min_version"])
    if version is None:
        raise ProfileError(
            path, f"{where}.min_version", f"must be MAJOR.MINOR.PATCH, got {raw['min_version']!r}"
        )
    protocol: int = raw["protocol"]
    if protocol < 1:
        raise ProfileError(path, f"{where}.protocol", f"must be a TSP major >= 1, got {protocol}")
    link: str = raw["link"]
    if link not in LINKS:
        raise ProfileError(path, f"{where}.link", f"must be one of {LINKS}, got {link!r}")
    baudrate: int = raw["baudrate"]
    if baudrate not in BAUDRATES:
        raise ProfileError(path, f"{where}.baudrate", f"must be one of {BAUDRATES}, got {baudrate}")
    caps: list[Any] = raw["capabilities"]
    for i, cap in enumerate(caps):
        if cap not in KNOWN_CAPABILITIES:
            known = ", ".join(sorted(KNOWN_CAPABILITIES))
            raise ProfileError(
                path, f"{where}.capabilities[{i}]", f"unknown capability {cap!r}; known: {known}"
            )
    if "passive" not in caps:
        raise ProfileError(path, f"{where}.capabilities", "every TSP firmware scans 'passive'")
    return CoprocessorProfile(
        name=name,
        min_version=(int(version[1]), int(version[2]), int(version[3])),
        protocol=protocol,
        link=link,
        baudrate=baudrate,
        capabilities=frozenset(caps),
        description=raw.get("description", ""),
    )


def parse_profiles(text: str, path: str = "<profiles>") -> dict[str, CoprocessorProfile]:
    """Parse and validate profiles; return them by firmware name. Raises ProfileError."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(path, "-", f"is not valid TOML: {exc}") from None
    for key in raw:
        if key not in _TOP_FIELDS:
            raise ProfileError(path, key, f"unknown key; known: {', '.join(_TOP_FIELDS)}")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise ProfileError(
            path,
            "schema_version",
            f"must be {SCHEMA_VERSION} (this gateway reads profile schema {SCHEMA_VERSION}), "
            f"got {version!r}",
        )
    entries = raw.get("firmware", [])
    if not isinstance(entries, list):
        raise ProfileError(path, "firmware", "must be an array of tables ([[firmware]])")
    profiles: dict[str, CoprocessorProfile] = {}
    for i, entry in enumerate(entries):
        profile = _firmware(entry, path, f"firmware[{i}]")
        if profile.name in profiles:
            raise ProfileError(path, f"firmware[{i}].name", f"{profile.name!r} is listed twice")
        profiles[profile.name] = profile
    return profiles


def load_profiles(path: Path = DEFAULT_PATH) -> dict[str, CoprocessorProfile]:
    """Read and validate a profiles file (by default the one shipped with the gateway)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(str(path), "-", f"cannot be read: {exc.strerror}") from None
    return parse_profiles(text, str(path))
