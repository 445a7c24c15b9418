"""The OpenAPI 3.0 document of the public tracking API, served at GET /openapi.json."""

from __future__ import annotations

from typing import Any

from trackd import __version__

_TS = {"type": "string", "format": "date-time"}
_OBJ = {"type": "object", "additionalProperties": True}
_COMMON: dict[str, Any] = {
    "userId": {"type": "string", "maxLength": 255},
    "anonymousId": {"type": "string", "maxLength": 255},
    "messageId": {"type": "string", "maxLength": 100},
    "timestamp": _TS, "sentAt": _TS, "context": _OBJ, "integrations": _OBJ,
    "writeKey": {"type": "string"},
}
_FIELDS: dict[str, dict[str, Any]] = {
    "track": {"event": {"type": "string", "minLength": 1, "maxLength": 200},
              "properties": _OBJ},
    "identify": {"traits": _OBJ},
    "page": {"name": {"type": "string"}, "category": {"type": "string"}, "properties": _OBJ},
    "screen": {"name": {"type": "string"}, "properties": _OBJ},
    "group": {"groupId": {"type": "string", "minLength": 1}, "traits": _OBJ},
    "alias": {"previousId": {"type": "string", "minLength": 1}},
}
_REQUIRED = {"track": ["event"], "group": ["groupId"], "alias": ["userId", "previousId"]}
_ERROR = {"type": "object", "properties": {
    "success": {"type": "boolean"}, "code": {"type": "string"}, "message": {"type": "string"},
    "error": {"type": "object", "properties": {"type": {"type": "string"},
                                               "message": {"type": "string"}}}}}


def _message(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "additionalProperties": True,
                              "properties": {**_COMMON, **_FIELDS[kind]}}
    if kind in _REQUIRED:
        schema["required"] = _REQUIRED[kind]
    return schema


def _responses(batch: bool) -> dict[str, Any]:
    ok: dict[str, Any] = {"success": {"type": "boolean"}}
    if batch:
        ok |= {"accepted": {"type": "integer"}, "rejected": {"type": "array"}}
    err = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {
        "200": {"description": "Stored durably (fsync'd) before this answer.",
                "content": {"application/json": {"schema": {"type": "object",
                                                             "properties": ok}}}},
        "400": {"description": "Invalid JSON or a validation error.", **err},
        "401": {"description": "Missing or unknown write key.", **err},
        "408": {"description": "Body not received in time.", **err},
        "413": {"description": "Payload over 32 KB (message) or 500 KB (batch).", **err},
        "429": {"description": "Source rate limit exceeded (Retry-After).", **err},
        "503": {"description": "Log full, disk full or shutting down (Retry-After).", **err},
    }


def document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for kind in _FIELDS:
        for path in (f"/v1/{kind}", f"/v1/{kind[0]}"):
            paths[path] = {"post": {
                "summary": f"Send one {kind} message", "operationId": f"{kind}_{path[4:]}",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{kind}"}}}},
                "responses": _responses(False)}}
    batch = {"type": "object", "required": ["batch"], "properties": {
        "batch": {"type": "array", "maxItems": 2500, "items": {
            "type": "object", "required": ["type"], "additionalProperties": True,
            "properties": {"type": {"type": "string", "enum": list(_FIELDS)}}}},
        "sentAt": _TS, "context": _OBJ, "integrations": _OBJ, "writeKey": {"type": "string"}}}
    for path in ("/v1/batch", "/v1/import", "/v1/b"):
        paths[path] = {"post": {
            "summary": "Send a batch; each item is judged alone",
            "operationId": f"batch_{path[4:]}",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Batch"}}}},
            "responses": _responses(True)}}
    paths["/v1/projects/{writeKey}/settings"] = {"get": {
        "summary": "analytics.js settings", "operationId": "settings",
        "parameters": [{"name": "writeKey", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "responses": {"200": {"description": "Settings for the browser library."},
                      "404": {"description": "Unknown write key."}}}}
    for path, what in (("/healthz", "Liveness"), ("/readyz", "Readiness (log writable)"),
                       ("/metrics", "Prometheus metrics")):
        paths[path] = {"get": {"summary": what, "operationId": path[1:],
                               "responses": {"200": {"description": what},
                                             "503": {"description": "Not ready"}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "trackd tracking API", "version": __version__,
                 "description": "Segment-compatible tracking API."},
        "paths": paths,
        "components": {
            "schemas": {**{k: _message(k) for k in _FIELDS}, "Batch": batch, "Error": _ERROR},
            "securitySchemes": {"writeKey": {"type": "http", "scheme": "basic"}},
        },
        "security": [{"writeKey": []}],
    }
