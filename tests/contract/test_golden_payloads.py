"""Golden edge ↔ bridge payloads: what is on the wire today must keep decoding, and the docs match."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edge.core import wire

ROOT = Path(__file__).parents[2]
GOLDEN = sorted((Path(__file__).parent / "golden").glob("*.json"))


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden_payload_decodes_and_re_encodes_identically(path: Path) -> None:
    data = path.read_bytes()
    payload = wire.decode(data, str(path))
    assert json.loads(wire.encode(payload)) == json.loads(data)


def test_every_payload_type_has_a_golden_copy() -> None:
    types = {json.loads(p.read_bytes())["type"] for p in GOLDEN}
    assert types == {
        "status",
        "visit",
        "offer_trigger",
        "ack",
        "offer",
        "offer_receipt",
        "roster",
        "campaigns",
    }


def test_docs_show_every_golden_payload_and_decodable_examples() -> None:
    doc = (ROOT / "docs" / "mqtt.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", doc, flags=re.S)
    documented = [json.loads(b) for b in blocks]
    for block in blocks:
        wire.decode(block.encode(), "docs/mqtt.md")
    for path in GOLDEN:
        assert json.loads(path.read_bytes()) in documented, f"docs/mqtt.md lacks {path.name}"


def test_docs_name_every_topic() -> None:
    doc = (ROOT / "docs" / "mqtt.md").read_text()
    for suffix in (
        "/status",
        "/event/visit",
        "/event/offer",
        "/ack",
        "/sync/roster",
        "/sync/campaigns",
        "/shopper/{shopper}/offer",
    ):
        assert suffix in doc, f"docs/mqtt.md does not name the topic ending {suffix}"
