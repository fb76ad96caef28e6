"""Campaign management over the bridge's HTTP API (issue 11): campaigns, their code pools, and the
stores' time zones and tags, as `cloud-bridge campaign ...` and `cloud-bridge store set` do.

JSON in and out is `Campaign.to_json`'s shape. The decoder is strict: an unknown field, a wrong
JSON type (a boolean is not a number), a read-only field are refused with 400 naming the field,
as is everything cloud_bridge/core/campaigns.py refuses; an unknown campaign or store is 404, a
change to an archived campaign 409. `PATCH` replaces the fields it names; `null` clears a field
that may be empty. docs/campaigns.md is the guide; OPENAPI_PATHS the schema.

Every change moves a campaign's revision by one. A campaign's responses carry it as
`ETag: "<revision>"`; a PATCH, pause, resume or archive with `If-Match: "<revision>"` is refused
with 412 (nothing written) if the campaign changed since: two people editing at once do not
silently undo each other. Without If-Match, the change applies to whatever is stored.
`GET /v1/campaigns/{id}/history` lists its revisions: what changed, when, through what.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from cloud_bridge.adapters.http_api import HttpProblem, HttpResponse, Request, Route, json_object
from cloud_bridge.core.campaigns import (
    CLEARABLE,
    ArchivedCampaign,
    Campaign,
    CampaignAction,
    CampaignChange,
    CampaignDefinition,
    CampaignExists,
    CampaignRevision,
    CampaignSchedule,
    ChangeSource,
    CodeCounts,
    InvalidCampaign,
    StaleRevision,
    StoreFacts,
    UnknownCampaign,
    UnknownStore,
)
from cloud_bridge.errors import RecordsError
from edge.core import wire

RETRY_AFTER_S = 5
MAX_CODES_PER_REQUEST = 5000


class CampaignRecords(Protocol):
    """What the campaign endpoints need of the loyalty records (SqliteLoyaltyRecords)."""

    async def campaign_list(self) -> list[Campaign]: ...

    async def campaign(self, campaign_id: str) -> Campaign | None: ...

    async def create_campaign(
        self, definition: CampaignDefinition, now_s: float, *, source: ChangeSource = ...
    ) -> Campaign: ...

    async def update_campaign(
        self,
        campaign_id: str,
        change: CampaignChange,
        now_s: float,
        *,
        source: ChangeSource = ...,
        if_revision: int | None = ...,
    ) -> Campaign: ...

    async def set_campaign_status(
        self,
        campaign_id: str,
        action: CampaignAction,
        now_s: float,
        *,
        source: ChangeSource = ...,
        if_revision: int | None = ...,
    ) -> Campaign: ...

    async def add_campaign_codes(
        self, campaign_id: str, codes: Sequence[str], now_s: float, *, source: ChangeSource = ...
    ) -> CodeCounts: ...

    async def campaign_history(self, campaign_id: str) -> list[CampaignRevision]: ...

    async def campaign_code_counts(self, campaign_id: str) -> CodeCounts: ...

    async def store_list(self) -> list[StoreFacts]: ...

    async def set_store(
        self, store: str, timezone: str | None = None, tags: tuple[str, ...] | None = None
    ) -> StoreFacts: ...


# --- the strict decoder ---------------------------------------------------------------------------

_TEXT = ("title", "body")
_LISTS = ("tiers", "interests", "stores", "store_tags", "segments")
_OPTIONAL_TEXT = ("promotion_type", "image_url", "deep_link", "code")
_SECONDS = ("cooldown_s", "validity_s")
_COUNTS = ("min_visits", "max_visits", "per_member_day", "per_member_week", "daily_budget")
_READ_ONLY = ("status", "created_at", "updated_at")
_FIELDS = frozenset(
    ("id", *_TEXT, *_LISTS, *_OPTIONAL_TEXT, *_SECONDS, *_COUNTS, "priority", "holdout_pct")
) | {"schedule"}
DEFAULTS: dict[str, Any] = {"cooldown_s": 86400.0, "priority": 0, "validity_s": 3600.0}


def _refuse(field: str, problem: str) -> InvalidCampaign:
    return InvalidCampaign(field, problem)


def _is_number(value: object) -> bool:
    """A JSON number that is a float (an integer of hundreds of digits is not one: float() and
    math.isfinite() raise OverflowError on it)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _field(name: str, value: Any) -> Any:
    """One field's value with its JSON type checked (None where null is allowed)."""
    if name in _TEXT or name == "id":
        if not isinstance(value, str):
            raise _refuse(name, "must be a string")
        return value
    if name in _LISTS:
        if not isinstance(value, list):
            raise _refuse(name, "must be a list of strings ([] for none)")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise _refuse(f"{name}[{i}]", "must be a string")
        return tuple(value)
    if value is None:
        if name in (*_OPTIONAL_TEXT, *_COUNTS, "schedule", "holdout_pct"):
            return None
        raise _refuse(name, "must not be null")
    if name in _OPTIONAL_TEXT:
        if not isinstance(value, str):
            raise _refuse(name, "must be a string or null")
        return value
    if name in _SECONDS or name == "holdout_pct":
        if not _is_number(value) or not math.isfinite(value):
            raise _refuse(name, "must be a number")
        return float(value)
    if name in _COUNTS or name == "priority":
        if not isinstance(value, int) or isinstance(value, bool):
            raise _refuse(name, "must be an integer" + ("" if name == "priority" else " or null"))
        return value
    if name == "schedule":
        if not isinstance(value, dict):
            raise _refuse(name, "must be an object or null")
        return CampaignSchedule.from_json(value)
    raise _refuse(name, "is not a campaign field")  # pragma: no cover - _FIELDS guards


def _known(body: dict[str, Any]) -> None:
    for name in body:
        if name == "revision":
            raise _refuse(
                name,
                'is read-only: to change only the revision you read, send If-Match: "<revision>"',
            )
        if name in _READ_ONLY:
            raise _refuse(
                name,
                "is read-only: change the status with POST /v1/campaigns/{id}/pause, resume or "
                "archive",
            )
        if name not in _FIELDS:
            raise _refuse(name[:64], "is not a campaign field (see docs/campaigns.md)")


def parse_definition(body: dict[str, Any]) -> CampaignDefinition:
    """A `POST /v1/campaigns` body as a definition (checked by the records: `check_campaign`)."""
    _known(body)
    for required in ("id", "title", "body", "tiers"):
        if required not in body:
            raise _refuse(required, "is required")
    fields = {name: _field(name, value) for name, value in body.items()}
    for name, default in DEFAULTS.items():
        fields.setdefault(name, default)
    if fields.get("holdout_pct") is None:
        fields["holdout_pct"] = 0.0
    return CampaignDefinition(**fields)


def parse_change(body: dict[str, Any]) -> CampaignChange:
    """A `PATCH /v1/campaigns/{id}` body: the fields named replace the stored ones; null clears."""
    _known(body)
    if "id" in body:
        raise _refuse("id", "cannot change: create a new campaign")
    fields: dict[str, Any] = {}
    cleared = set()
    for name, value in body.items():
        parsed = _field(name, value)
        if parsed is None:
            if name not in CLEARABLE:
                raise _refuse(name, "must not be null")
            cleared.add(name)
        else:
            fields[name] = parsed
    return CampaignChange(**fields, clear=frozenset(cleared))


def _store_patch(body: dict[str, Any]) -> tuple[str | None, tuple[str, ...] | None]:
    for name in body:
        if name not in ("timezone", "tags"):
            raise _refuse(name[:64], "is not a store field you can change (timezone, tags)")
    timezone = body.get("timezone")
    if "timezone" in body and not isinstance(timezone, str):
        raise _refuse("timezone", "must be an IANA time zone name, e.g. Europe/Paris")
    tags = None
    if "tags" in body:
        sent = body["tags"]
        if not isinstance(sent, list):
            raise _refuse("tags", "must be a list of strings ([] for none)")
        for i, tag in enumerate(sent):
            if not isinstance(tag, str):
                raise _refuse(f"tags[{i}]", "must be a string")
        tags = tuple(sent)
    if timezone is None and tags is None:
        raise _refuse("timezone", "give timezone and/or tags")
    return timezone, tags


# --- revisions ----------------------------------------------------------------------------------

#: An entity tag as this API writes it: a revision in quotes (a weak W/ one is the same here).
_ETAG = re.compile(r'^(?:W/)?"([1-9][0-9]{0,17})"$')


def etag(campaign: Campaign) -> tuple[tuple[str, str], ...]:
    """The ETag header naming the campaign's revision."""
    return (("ETag", f'"{campaign.revision}"'),)


def if_match(request: Request) -> int | None:
    """The revision the request's If-Match names; None without one (or `*`: any revision).
    400 naming the header if it is not one of this API's ETags."""
    sent = request.header("if-match")
    if sent is None or sent.strip() == "*":
        return None
    found = _ETAG.match(sent.strip())
    if found is None:
        raise HttpProblem(
            400,
            "bad_request",
            f"{request.where}: header If-Match: {sent[:40]!r} is not a campaign's ETag; send "
            'the one its GET answered, e.g. If-Match: "3"',
            field="If-Match",
        )
    return int(found.group(1))


# --- the endpoints ------------------------------------------------------------------------------


class CampaignsApi:
    """The campaign and store endpoints over `records`; `clock` gives Unix seconds."""

    def __init__(self, records: CampaignRecords, clock: Callable[[], float]) -> None:
        self.records = records
        self.clock = clock

    async def _call(self, request: Request, work: Any) -> Any:
        """Await `work`, mapping the records' refusals to HTTP problems."""
        try:
            return await work
        except (UnknownCampaign, UnknownStore) as exc:
            raise HttpProblem(404, "not_found", f"{request.where}: {exc.problem}") from None
        except ArchivedCampaign as exc:
            raise HttpProblem(409, "archived", f"{request.where}: {exc.problem}") from None
        except StaleRevision as exc:
            raise HttpProblem(
                412,
                "precondition_failed",
                f"{request.where}: {exc.problem}",
                field="If-Match",
                headers=(("ETag", f'"{exc.current}"'),),
            ) from None
        except CampaignExists as exc:
            raise HttpProblem(
                409, "already_exists", f"{request.where}: {exc.problem}", field=exc.field
            ) from None
        except InvalidCampaign as exc:
            raise HttpProblem(
                400, "invalid_field", f"{request.where}: {exc}", field=exc.field
            ) from None
        except RecordsError as exc:
            raise HttpProblem(
                503,
                "unavailable",
                f"{request.where}: the loyalty records failed ({exc}); retry in {RETRY_AFTER_S} s",
                headers=(("Retry-After", str(RETRY_AFTER_S)),),
            ) from None

    def _parsed(self, request: Request, parse: Callable[[dict[str, Any]], Any]) -> Any:
        try:
            return parse(json_object(request))
        except InvalidCampaign as exc:
            raise HttpProblem(
                400, "invalid_field", f"{request.where}: {exc}", field=exc.field
            ) from None

    async def list_campaigns(self, request: Request, _: str) -> HttpResponse:
        campaigns = await self._call(request, self.records.campaign_list())
        return HttpResponse(200, {"campaigns": [c.to_json() for c in campaigns]})

    async def create(self, request: Request, _: str) -> HttpResponse:
        definition = self._parsed(request, parse_definition)
        created = await self._call(
            request, self.records.create_campaign(definition, self.clock(), source="api")
        )
        return HttpResponse(
            201, created.to_json(), (("Location", f"/v1/campaigns/{definition.id}"), *etag(created))
        )

    async def show(self, request: Request, campaign_id: str) -> HttpResponse:
        found = await self._call(request, self.records.campaign(campaign_id))
        if found is None:
            raise HttpProblem(404, "not_found", f"{request.where}: no campaign {campaign_id!r}")
        return HttpResponse(200, found.to_json(), etag(found))

    async def history(self, request: Request, campaign_id: str) -> HttpResponse:
        found = await self._call(request, self.records.campaign_history(campaign_id))
        return HttpResponse(
            200, {"campaign": campaign_id, "revisions": [r.to_json() for r in found]}
        )

    async def update(self, request: Request, campaign_id: str) -> HttpResponse:
        revision = if_match(request)
        change = self._parsed(request, parse_change)
        updated = await self._call(
            request,
            self.records.update_campaign(
                campaign_id, change, self.clock(), source="api", if_revision=revision
            ),
        )
        return HttpResponse(200, updated.to_json(), etag(updated))

    def status(self, action: CampaignAction) -> Callable[[Request, str], Any]:
        async def set_status(request: Request, campaign_id: str) -> HttpResponse:
            revision = if_match(request)
            self._parsed(request, _no_fields)
            changed = await self._call(
                request,
                self.records.set_campaign_status(
                    campaign_id, action, self.clock(), source="api", if_revision=revision
                ),
            )
            return HttpResponse(200, changed.to_json(), etag(changed))

        return set_status

    async def add_codes(self, request: Request, campaign_id: str) -> HttpResponse:
        codes = self._parsed(request, _codes)
        counts = await self._call(
            request, self.records.add_campaign_codes(campaign_id, codes, self.clock(), source="api")
        )
        return HttpResponse(200, counts.to_json())

    async def code_counts(self, request: Request, campaign_id: str) -> HttpResponse:
        counts = await self._call(request, self.records.campaign_code_counts(campaign_id))
        return HttpResponse(200, counts.to_json())

    async def list_stores(self, request: Request, _: str) -> HttpResponse:
        stores = await self._call(request, self.records.store_list())
        return HttpResponse(200, {"stores": [s.to_json() for s in stores]})

    async def set_store(self, request: Request, store: str) -> HttpResponse:
        timezone, tags = self._parsed(request, _store_patch)
        facts = await self._call(
            request, self.records.set_store(store, timezone=timezone, tags=tags)
        )
        return HttpResponse(200, facts.to_json())

    def routes(self) -> tuple[Route, ...]:
        campaign = r"^/v1/campaigns/([^/]+)"
        return (
            Route.of(r"^/v1/campaigns$", {"GET": self.list_campaigns, "POST": self.create}),
            Route.of(campaign + "$", {"GET": self.show, "PATCH": self.update}),
            *(
                Route.of(f"{campaign}/{action}$", {"POST": self.status(action)})
                for action in ("pause", "resume", "archive")
            ),
            Route.of(campaign + "/codes$", {"GET": self.code_counts, "POST": self.add_codes}),
            Route.of(campaign + "/history$", {"GET": self.history}),
            Route.of(r"^/v1/stores$", {"GET": self.list_stores}),
            Route.of(r"^/v1/stores/([^/]+)$", {"PATCH": self.set_store}),
        )


def _no_fields(body: dict[str, Any]) -> None:
    if body:
        raise _refuse(next(iter(body))[:64], "is not a field: this endpoint takes no body")


def _codes(body: dict[str, Any]) -> list[str]:
    for name in body:
        if name != "codes":
            raise _refuse(name[:64], 'is not a field: send {"codes": ["CODE1", ...]}')
    codes = body.get("codes")
    if not isinstance(codes, list):
        raise _refuse("codes", "must be a list of strings")
    if len(codes) > MAX_CODES_PER_REQUEST:
        raise _refuse("codes", f"at most {MAX_CODES_PER_REQUEST} per request; send several")
    for i, code in enumerate(codes):
        if not isinstance(code, str):
            raise _refuse(f"codes[{i}]", "must be a string")
    return codes


def routes(records: CampaignRecords, clock: Callable[[], float]) -> tuple[Route, ...]:
    """The campaign and store endpoints, for EnrollmentApiServer(routes=...)."""
    return CampaignsApi(records, clock).routes()


# --- OpenAPI 3.1 ----------------------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": {"$ref": "#/components/responses/BadRequest"},
    "401": {"$ref": "#/components/responses/Unauthorized"},
}
_NOT_FOUND = {"404": {"$ref": "#/components/responses/NotFound"}}
_ARCHIVED = {"409": _json(_ref("Error"), "The campaign is archived (final).")}
_STALE = {
    "412": {
        **_json(
            _ref("Error"),
            "If-Match named another revision: the campaign changed since; nothing was written. "
            "The ETag header names the current revision.",
        ),
        "headers": {"ETag": {"schema": {"type": "string"}}},
    }
}
_IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "examples": ['"3"']},
    "description": 'The ETag a GET answered ("<revision>"): the change applies only if the '
    "campaign is still at that revision (412 otherwise). Absent or *: any revision.",
}
_ETAG_HEADER = {
    "ETag": {"schema": {"type": "string"}, "description": 'The campaign\'s revision, "<n>".'}
}
_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": wire.ID_PATTERN},
    "description": "The campaign's id.",
}
_COUNT = {"type": ["integer", "null"], "minimum": 0, "maximum": 1_000_000_000}
_LOCAL = {
    "type": ["string", "null"],
    "pattern": r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2})?$",
    "description": "Local date (its midnight) or date and time, in each store's time zone.",
}
_STRINGS = {"type": "array", "items": {"type": "string"}}

OPENAPI_SCHEMAS: dict[str, Any] = {
    "CampaignSchedule": {
        "type": "object",
        "additionalProperties": False,
        "description": "When the campaign runs, in each store's LOCAL time (end exclusive). A "
        "start or end the DST change skips moves later by the gap; one that occurs twice is "
        "its first occurrence.",
        "properties": {
            "start": _LOCAL,
            "end": _LOCAL,
            "days": {
                "type": "array",
                "items": {"type": "integer", "minimum": 1, "maximum": 7},
                "description": "ISO weekdays, Monday 1; [] every day.",
            },
            "hours": {
                "type": "array",
                "maxItems": 24,
                "items": {
                    "type": "array",
                    "prefixItems": [{"type": "string"}, {"type": "string"}],
                    "minItems": 2,
                    "maxItems": 2,
                },
                "description": 'Windows ["HH:MM", "HH:MM"], end exclusive ("24:00": midnight), '
                "not overlapping; [] all day.",
            },
        },
    },
    "CampaignFields": {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 500},
            "body": {"type": "string", "maxLength": 4000},
            "tiers": {**_STRINGS, "description": "Member tiers it is for (at least one)."},
            "promotion_type": {"type": ["string", "null"]},
            "interests": {**_STRINGS, "description": "[]: any interest."},
            "cooldown_s": {"type": "number", "minimum": 0},
            "priority": {"type": "integer"},
            "validity_s": {"type": "number", "exclusiveMinimum": 0},
            "stores": {**_STRINGS, "description": "Store ids it runs at."},
            "store_tags": {
                **_STRINGS,
                "description": "It also runs at every store with one of these tags. No stores "
                "and no tags: every store.",
            },
            "image_url": {
                "type": ["string", "null"],
                "description": "https (http only on loopback).",
            },
            "deep_link": {"type": ["string", "null"], "description": "A URI with a scheme."},
            "code": {
                "type": ["string", "null"],
                "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
                "description": "One code for every offer (or a pool: POST .../codes).",
            },
            "segments": {
                "type": "array",
                "items": {"enum": list(wire.SEGMENTS)},
                "description": "Members in any of these segments; [] everyone.",
            },
            "min_visits": _COUNT,
            "max_visits": _COUNT,
            "schedule": {"oneOf": [_ref("CampaignSchedule"), {"type": "null"}]},
            "per_member_day": _COUNT,
            "per_member_week": _COUNT,
            "daily_budget": {
                **_COUNT,
                "description": "Offers per local day at all its stores, split between their "
                "gateways.",
            },
            "holdout_pct": {"type": ["number", "null"], "minimum": 0, "maximum": 100},
        },
    },
    "NewCampaign": {
        "allOf": [_ref("CampaignFields")],
        "type": "object",
        "unevaluatedProperties": False,
        "required": ["id", "title", "body", "tiers"],
        "properties": {"id": {"type": "string", "pattern": wire.ID_PATTERN}},
        "description": "Defaults: cooldown_s 86400, priority 0, validity_s 3600, holdout_pct 0.",
    },
    "Campaign": {
        "allOf": [_ref("CampaignFields")],
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "status": {"enum": ["active", "paused", "archived"]},
            "created_at": {"type": ["number", "null"]},
            "updated_at": {"type": ["number", "null"]},
            "revision": {
                "type": "integer",
                "minimum": 1,
                "description": "1 when created, one more at each change (the ETag).",
            },
        },
    },
    "CampaignRevision": {
        "type": "object",
        "properties": {
            "campaign": {"type": "string"},
            "revision": {"type": "integer", "minimum": 1},
            "changed_at": {"type": "number", "description": "Unix seconds."},
            "action": {"enum": ["create", "update", "pause", "resume", "archive", "codes"]},
            "fields": {
                **_STRINGS,
                "description": 'The fields it changed ("status" for pause, resume, archive; '
                '"codes" for codes added to the pool).',
            },
            "source": {"enum": ["cli", "api"]},
        },
    },
    "CodeCounts": {
        "type": "object",
        "properties": {
            "campaign": {"type": "string"},
            "total": {"type": "integer"},
            "given_out": {"type": "integer"},
            "free": {"type": "integer"},
        },
    },
    "Store": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "timezone": {"type": "string"},
            "tags": _STRINGS,
            "location": {
                "oneOf": [
                    {
                        "type": "object",
                        "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                    },
                    {"type": "null"},
                ]
            },
            "gateways": {"type": "integer"},
        },
    },
}


def _status_path(action: str, what: str) -> dict[str, Any]:
    return {
        "parameters": [_ID],
        "post": {
            "summary": what,
            "tags": ["campaigns"],
            "parameters": [_IF_MATCH],
            "responses": {
                "200": {
                    **_json(_ref("Campaign"), f"The campaign, {action}d."),
                    "headers": _ETAG_HEADER,
                },
                **_ERRORS,
                **_NOT_FOUND,
                **_ARCHIVED,
                **_STALE,
            },
        },
    }


OPENAPI_PATHS: dict[str, Any] = {
    "/v1/campaigns": {
        "get": {
            "summary": "Every campaign, archived ones too, by id",
            "tags": ["campaigns"],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {"campaigns": {"type": "array", "items": _ref("Campaign")}},
                    },
                    "The campaigns.",
                ),
                "401": _ERRORS["401"],
            },
        },
        "post": {
            "summary": "Create an active campaign",
            "tags": ["campaigns"],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("NewCampaign")}},
            },
            "responses": {
                "201": _json(_ref("Campaign"), "Created; Location names it."),
                **_ERRORS,
                "409": _json(_ref("Error"), "A campaign with this id exists."),
            },
        },
    },
    "/v1/campaigns/{id}": {
        "parameters": [_ID],
        "get": {
            "summary": "One campaign",
            "tags": ["campaigns"],
            "responses": {
                "200": {**_json(_ref("Campaign"), "The campaign."), "headers": _ETAG_HEADER},
                **_ERRORS,
                **_NOT_FOUND,
            },
        },
        "patch": {
            "summary": "Change a campaign: the fields sent replace the stored ones; null clears",
            "tags": ["campaigns"],
            "parameters": [_IF_MATCH],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "allOf": [_ref("CampaignFields")],
                            "unevaluatedProperties": False,
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    **_json(_ref("Campaign"), "The campaign as changed."),
                    "headers": _ETAG_HEADER,
                },
                **_ERRORS,
                **_NOT_FOUND,
                **_ARCHIVED,
                **_STALE,
            },
        },
    },
    "/v1/campaigns/{id}/history": {
        "parameters": [_ID],
        "get": {
            "summary": "A campaign's revisions, oldest first: what changed, when, through what",
            "tags": ["campaigns"],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "campaign": {"type": "string"},
                            "revisions": {"type": "array", "items": _ref("CampaignRevision")},
                        },
                    },
                    "The history (a campaign from before revisions has no line for revision 1).",
                ),
                **_ERRORS,
                **_NOT_FOUND,
            },
        },
    },
    "/v1/campaigns/{id}/pause": _status_path("pause", "Pause: it leaves the gateways' sync"),
    "/v1/campaigns/{id}/resume": _status_path("resume", "Resume a paused campaign"),
    "/v1/campaigns/{id}/archive": _status_path("archive", "Archive: final"),
    "/v1/campaigns/{id}/codes": {
        "parameters": [_ID],
        "get": {
            "summary": "The code pool's counts",
            "tags": ["campaigns"],
            "responses": {"200": _json(_ref("CodeCounts"), "Counts."), **_ERRORS, **_NOT_FOUND},
        },
        "post": {
            "summary": "Add codes to the pool (one per offer), all or none; unique in the chain",
            "tags": ["campaigns"],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["codes"],
                            "properties": {
                                "codes": {
                                    **_STRINGS,
                                    "maxItems": MAX_CODES_PER_REQUEST,
                                }
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": _json(_ref("CodeCounts"), "Counts after adding."),
                **_ERRORS,
                **_NOT_FOUND,
                **_ARCHIVED,
            },
        },
    },
    "/v1/stores": {
        "get": {
            "summary": "Every store: time zone, tags, location, gateways",
            "tags": ["stores"],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {"stores": {"type": "array", "items": _ref("Store")}},
                    },
                    "The stores.",
                ),
                "401": _ERRORS["401"],
            },
        },
    },
    "/v1/stores/{id}": {
        "parameters": [{**_ID, "description": "The store's id."}],
        "patch": {
            "summary": "Set a store's IANA time zone and/or its tags",
            "tags": ["stores"],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "timezone": {"type": "string", "examples": ["Europe/Paris"]},
                                "tags": _STRINGS,
                            },
                        }
                    }
                },
            },
            "responses": {"200": _json(_ref("Store"), "The store."), **_ERRORS, **_NOT_FOUND},
        },
    },
}
