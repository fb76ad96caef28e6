"""The API's OpenAPI description: docs/openapi.json is the generated document, it is OpenAPI 3.1
in shape, and every route the bridge serves (path pattern and method) is described, and nothing
that is not served."""

from __future__ import annotations

import json
import re
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from cloud_bridge.adapters import openapi
from cloud_bridge.adapters.http_api import EnrollmentApi, Route
from cloud_bridge.adapters.sqlite_deliveries import SqliteDeliveries
from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.app import api_routes
from cloud_bridge.core.enrollment import Enrollment

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Route, ...]]:
    """Every route of the bridge's API server, as the composition root builds them."""
    records = await SqliteLoyaltyRecords.open(tmp_path / "loyalty.db", "acme", create=True)
    try:
        enrollment = EnrollmentApi(cast(Enrollment, None)).routes()
        yield (*enrollment, *api_routes(records, lambda: 0.0, SqliteDeliveries(records)))
    finally:
        await records.close()


def test_docs_openapi_json_is_the_generated_document() -> None:
    assert DOCS.read_text(encoding="utf-8") == openapi.document_text(), (
        "docs/openapi.json is stale: python -m cloud_bridge.adapters.openapi docs/openapi.json"
    )


def test_the_document_is_openapi_3_1_with_resolvable_references() -> None:
    doc = openapi.document()
    assert doc["openapi"] == "3.1.0" and doc["info"]["version"]
    text = json.dumps(doc)
    for ref in set(re.findall(r'"\$ref": "#/([^"]+)"', text)):
        node: Any = doc
        for part in ref.split("/"):
            node = node[part]  # KeyError: a dangling reference
    for path, item in doc["paths"].items():
        assert path.startswith("/v1/")
        params = set(re.findall(r"\{([^}]+)\}", path))
        declared = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        assert params == declared, path
        for method in set(item) - {"parameters"}:
            assert method in METHODS and item[method]["responses"], (path, method)


def test_every_route_is_described_and_every_description_is_served(
    served: tuple[Route, ...],
) -> None:
    paths = openapi.document()["paths"]
    concrete = {path: re.sub(r"\{[^}]+\}", "x-1", path) for path in paths}
    for route in served:
        for method in route.methods:
            matching = [p for p in paths if route.pattern.match(concrete[p])]
            assert any(method.lower() in paths[p] for p in matching), (
                f"{method} {route.pattern.pattern} is not described"
            )
    for path, item in paths.items():
        for method in set(item) & set(METHODS):
            assert any(
                route.pattern.match(concrete[path]) and method.upper() in route.methods
                for route in served
            ), f"{method.upper()} {path} is described but not served"


def test_two_modules_describing_one_path_are_refused() -> None:
    twice = types.ModuleType("cloud_bridge.adapters.http_twice")
    twice.OPENAPI_PATHS = {"/v1/alerts": {}}  # type: ignore[attr-defined]

    with pytest.raises(ValueError, match="/v1/alerts"):
        openapi.document([twice])
    assert "/v1/campaigns" not in openapi.document([])["paths"]  # no module: enrollment only
