"""The core stays sans-I/O: stdlib and cryptography only, no asyncio or I/O library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
CORES = sorted(
    [*(ROOT / "edge" / "core").glob("*.py"), *(ROOT / "cloud_bridge" / "core").glob("*.py")]
)
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


@pytest.mark.parametrize("path", CORES, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_core_module_imports_nothing_that_does_io(path: Path) -> None:
    tree = ast.parse(path.read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{path.name} imports {sorted(imported & FORBIDDEN)}"
