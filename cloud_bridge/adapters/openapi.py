"""The bridge API's OpenAPI 3.1 description: the enrollment endpoints (docs/enrollment-api.md) and
every `cloud_bridge/adapters/http_*.py` module's `OPENAPI_PATHS` (and `OPENAPI_SCHEMAS`, merged
into components), served at `GET /v1/openapi.json` and kept in docs/openapi.json
(`python -m cloud_bridge.adapters.openapi docs/openapi.json` rewrites it; a test checks it is
current and that every route the server has is described).

The modules are found, not listed: one that adds endpoints adds its paths next to them, and a
module without OPENAPI_PATHS adds none.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cloud_bridge import __version__
from cloud_bridge.adapters import http_api
from cloud_bridge.adapters.http_api import HttpResponse, Request, Route
from edge.core import wire

OPENAPI_VERSION = "3.1.0"
_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _path_id(name: str, what: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": wire.ID_PATTERN, "maxLength": 64},
        "description": what,
    }


_BAD = {"$ref": "#/components/responses/BadRequest"}
_UNAUTHORIZED = {"$ref": "#/components/responses/Unauthorized"}
_UNKNOWN = {"404": _json(_ERROR, "unknown_member or unknown_device.")}
_CONFLICT = {"409": _json(_ERROR, "already_enrolled, tier_conflict or no_consent.")}
_MEMBER = _path_id("member", "The member's id.")
_OBJECT = {"type": "object"}  # the enrollment answers' fields: docs/enrollment-api.md
_PREFERENCES = {
    "type": "object",
    "additionalProperties": False,
    "required": ["interests", "promotion_types"],
    "properties": {
        "interests": {"type": "array", "items": {"type": "string"}, "maxItems": 63},
        "promotion_types": {"type": "array", "items": {"type": "string"}, "maxItems": 63},
        "max_offers_per_day": {"type": "integer", "minimum": 0, "maximum": 24},
        "max_offers_per_week": {"type": "integer", "minimum": 0, "maximum": 100},
        "no_offers": {"type": "boolean"},
    },
}

#: The enrollment endpoints (cloud_bridge/adapters/http_api.py, EnrollmentApi.routes).
ENROLLMENT_PATHS: dict[str, Any] = {
    "/v1/members/{member}/devices": {
        "parameters": [_MEMBER],
        "post": {
            "summary": "Enroll a device (an app install or a tag); returns its identity key once",
            "tags": ["enrollment"],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["consent", "kind"],
                            "properties": {
                                "consent": {"const": True},
                                "kind": {"enum": ["app", "tag"]},
                                "tier": {"type": "string", "pattern": wire.ID_PATTERN},
                                "exponent": {"type": "integer", "minimum": 0, "maximum": 15},
                            },
                        }
                    }
                },
            },
            "responses": {
                "201": _json(_OBJECT, "The device, its identity key and the shopper token."),
                "400": _BAD,
                "401": _UNAUTHORIZED,
                **_UNKNOWN,
                **_CONFLICT,
            },
        },
    },
    "/v1/devices/{device}": {
        "parameters": [_path_id("device", "The device's id.")],
        "delete": {
            "summary": "Revoke a device: it leaves every gateway's roster at the next sync",
            "tags": ["enrollment"],
            "responses": {
                "200": _json(_OBJECT, "The device, now inactive."),
                "400": _BAD,
                "401": _UNAUTHORIZED,
                **_UNKNOWN,
            },
        },
    },
    "/v1/members/{member}/consent/withdraw": {
        "parameters": [_MEMBER],
        "post": {
            "summary": "Withdraw the member's consent: every device revoked, preferences forgotten",
            "tags": ["enrollment"],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"type": "object", "additionalProperties": False}
                    }
                },
            },
            "responses": {
                "200": _json(_OBJECT, "The member's status."),
                "400": _BAD,
                "401": _UNAUTHORIZED,
                **_UNKNOWN,
            },
        },
    },
    "/v1/members/{member}/preferences": {
        "parameters": [_MEMBER],
        "get": {
            "summary": "The member's stated preferences",
            "tags": ["preferences"],
            "responses": {
                "200": _json(_OBJECT, "The preferences, or {member, stated: false}."),
                "400": _BAD,
                "401": _UNAUTHORIZED,
                **_UNKNOWN,
            },
        },
        "put": {
            "summary": "State the member's preferences (replaces them)",
            "tags": ["preferences"],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _PREFERENCES}},
            },
            "responses": {
                "200": _json(_OBJECT, "The preferences as stored."),
                "400": _BAD,
                "401": _UNAUTHORIZED,
                **_UNKNOWN,
                **_CONFLICT,
            },
        },
        "delete": {
            "summary": "Forget the member's preferences",
            "tags": ["preferences"],
            "responses": {
                "200": _json(_OBJECT, "{member, stated: false, forgotten}."),
                "400": _BAD,
                "401": _UNAUTHORIZED,
                **_UNKNOWN,
            },
        },
    },
    "/v1/members/{member}": {
        "parameters": [_MEMBER],
        "get": {
            "summary": "The member's tier, consent and devices",
            "tags": ["enrollment"],
            "responses": {
                "200": _json(_OBJECT, "The member's status."),
                "400": _BAD,
                "401": _UNAUTHORIZED,
                **_UNKNOWN,
            },
        },
    },
    "/v1/alerts": {
        "get": {
            "summary": "The open clone alerts, oldest first",
            "tags": ["security"],
            "responses": {
                "200": _json(
                    {"type": "object", "properties": {"alerts": {"type": "array"}}},
                    "The alerts (docs/mqtt.md clone_alert without v and type).",
                ),
                "401": _UNAUTHORIZED,
            },
        },
    },
    "/v1/openapi.json": {
        "get": {
            "summary": "This description",
            "tags": ["meta"],
            "responses": {
                "200": _json({"type": "object"}, "The OpenAPI 3.1 document."),
                "401": _UNAUTHORIZED,
            },
        },
    },
}

_COMPONENTS: dict[str, Any] = {
    "securitySchemes": {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token from `cloud-bridge api-token`.",
        }
    },
    "schemas": {
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {
                "error": {"type": "string", "description": "A machine-readable code."},
                "message": {"type": "string", "description": "What, where, and what to do."},
                "field": {"type": "string", "description": "The field at fault, if one is."},
            },
        }
    },
    "responses": {
        "BadRequest": _json(_ERROR, "invalid_json, invalid_field (naming `field`), bad_request."),
        "Unauthorized": _json(_ERROR, "No valid Bearer token."),
        "NotFound": _json(_ERROR, "No such resource."),
    },
}


def api_modules() -> list[Any]:
    """Every `cloud_bridge.adapters.http_*` module but the server's own, by name."""
    package = Path(http_api.__file__).parent
    names = sorted(
        info.name
        for info in pkgutil.iter_modules([str(package)])
        if info.name.startswith("http_") and info.name != "http_api"
    )
    return [importlib.import_module(f"cloud_bridge.adapters.{name}") for name in names]


def document(modules: Iterable[Any] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document; ValueError if two modules describe the same path or schema."""
    paths: dict[str, Any] = dict(ENROLLMENT_PATHS)
    components = json.loads(json.dumps(_COMPONENTS))  # a copy to merge into
    for module in api_modules() if modules is None else modules:
        for path, item in getattr(module, "OPENAPI_PATHS", {}).items():
            if path in paths:
                raise ValueError(f"{module.__name__} describes {path}, described already")
            paths[path] = item
        for name, schema in getattr(module, "OPENAPI_SCHEMAS", {}).items():
            if name in components["schemas"]:
                raise ValueError(f"{module.__name__} defines schema {name}, defined already")
            components["schemas"][name] = schema
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Threshold bridge API",
            "version": __version__,
            "description": "Enrollment, preferences, campaigns and stores of a Threshold chain. "
            "Every request carries `Authorization: Bearer <token>`; bodies are JSON objects "
            "(UTF-8, Content-Length, at most 64 KiB); unknown fields are refused with 400 naming "
            "the field. Guides: docs/enrollment-api.md, docs/campaigns.md.",
        },
        "servers": [{"url": f"http://{http_api.DEFAULT_HOST}:{http_api.DEFAULT_PORT}"}],
        "security": [{"bearer": []}],
        "paths": dict(sorted(paths.items())),
        "components": components,
    }


def document_text() -> str:
    """The document as docs/openapi.json holds it."""
    return json.dumps(document(), indent=2, sort_keys=False) + "\n"


def routes() -> tuple[Route, ...]:
    """`GET /v1/openapi.json`: the document, built once."""
    built = document()

    async def serve(request: Request, _: str) -> HttpResponse:
        return HttpResponse(200, built)

    return (Route.of(r"^/v1/openapi\.json$", {"GET": serve}),)


if __name__ == "__main__":  # python -m cloud_bridge.adapters.openapi docs/openapi.json
    Path(sys.argv[1]).write_text(document_text(), encoding="utf-8")
