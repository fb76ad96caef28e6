"""The core stays sans-I/O: stdlib, cryptography and msgspec only, no asyncio or I/O library."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
CORE_MODULES = sorted(
    [*(ROOT / "edge" / "core").glob("*.py"), *(ROOT / "cloud_bridge" / "core").glob("*.py")]
)
#: Third-party libraries the core may use: pure computation, no I/O.
ALLOWED_LIBRARIES = {"cryptography", "msgspec"}
OUR_PACKAGES = {"edge", "cloud_bridge", "firmware_config"}
FORBIDDEN = {
    "asyncio",
    "socket",
    "sqlite3",
    "aiosqlite",
    "paho",
    "bleak",
    "serial",
    "gpiozero",
    "subprocess",
    "threading",
    "time",
    "random",
    "logging",
    "os",
    "uuid",
}


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_imports_nothing_that_does_io(path: Path) -> None:
    tree = ast.parse(path.read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{path.name} imports {sorted(imported & FORBIDDEN)}"


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_imports_only_the_stdlib_and_allowed_libraries(path: Path) -> None:
    tree = ast.parse(path.read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    others = imported - set(sys.stdlib_module_names) - ALLOWED_LIBRARIES - OUR_PACKAGES
    assert not others, f"{path.name} imports {sorted(others)}"
