"""The README's install steps fit the units: what the service user writes, it may write."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
STATE_DIR = "/var/lib/threshold"  # StateDirectory=threshold: the only place `threshold` may write
WRITTEN = ("--tokens-file", "--out", "--key", "--dir", "--ca-dir")


def commands() -> list[list[str]]:
    """Every shell command in the README's sh blocks, continuation lines joined, comments dropped."""
    found: list[list[str]] = []
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), re.S):
        text = re.sub(r"\\\n\s*", " ", block)
        for line in text.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                found.append(shlex.split(line))
    return found


def test_the_service_user_writes_only_in_its_state_directory() -> None:
    """`/etc/threshold` is root's (mode 750, group threshold): a `sudo -u threshold` command
    writing there fails with "Permission denied"."""
    as_service = [argv for argv in commands() if argv[:3] == ["sudo", "-u", "threshold"]]
    assert as_service
    for argv in as_service:
        targets = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg in WRITTEN]
        if "create-db" in argv:
            targets.append(argv[argv.index("create-db") + 1])
        for target in targets:
            assert target.startswith(STATE_DIR + "/"), shlex.join(argv)


def test_a_file_root_writes_for_the_service_is_handed_to_it() -> None:
    """The API tokens file is written by root (0600): the bridge can read it only once it is its own."""
    argvs = [shlex.join(argv) for argv in commands()]
    written = [a for a in argvs if " api-token " in f" {a} "]
    # As root: `sudo cloud-bridge ...`, not `sudo -u threshold ...`.
    assert written and all(a.startswith("sudo ") and " -u " not in a for a in written), written
    assert "sudo chown threshold:threshold /etc/threshold/api-tokens" in argvs
