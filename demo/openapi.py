"""OpenAPI 3.1 description of the demo's HTTP API (served at ``/_openapi.json``)."""

from __future__ import annotations

from typing import Any

from kvstore.types import MAX_KEY_BYTES, MAX_VALUE_BYTES


def _err(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _unavailable() -> dict[str, Any]:
    r = _err("No quorum / no leader reachable within the request timeout (`no_quorum`), the "
             "commit outcome is unknown after a leader loss (`outcome_unknown`: re-read before "
             "retrying), or the node is shutting down. Retry, on this or another node.")
    r["headers"] = {"Retry-After": {"schema": {"type": "integer"},
                                    "description": "seconds to wait before retrying"}}
    return r


_KEY = {"name": "key", "in": "path", "required": True,
        "description": f"1 to {MAX_KEY_BYTES} bytes of UTF-8, percent-encoded as needed; may "
                       "contain `/`; no control characters; may not start with `_`.",
        "schema": {"type": "string"}}
_REV = {"name": "rev", "in": "query", "schema": {"type": "integer", "minimum": 1},
        "description": "Read at this past revision (410 if compacted, 400 if in the future). "
                       "With `watch`: first revision to report (default: the next one)."}
_WATCH = {"name": "watch", "in": "query", "schema": {"type": "string",
                                                     "enum": ["1", "true", "stream", "sse"]},
          "description": "`1`: long poll, answers with the first events at or after `rev` "
                         "(or `[]` after `timeout`). `stream`: server-sent events (also chosen "
                         "by `Accept: text/event-stream`; resumes after `Last-Event-ID`)."}
_TIMEOUT = {"name": "timeout", "in": "query",
            "schema": {"type": "number", "minimum": 0, "maximum": 300, "default": 30},
            "description": "Long-poll wait in seconds."}
_RANGE = [
    {"name": "prefix", "in": "query", "schema": {"type": "string"},
     "description": "Every key starting with this (`?prefix=` alone: every key)."},
    {"name": "start", "in": "query", "schema": {"type": "string"},
     "description": "First key of a half-open range `[start, end)`."},
    {"name": "end", "in": "query", "schema": {"type": "string"},
     "description": "End of the range (exclusive; default: to the last key)."},
]
_KV_HEADERS = {
    "ETag": {"schema": {"type": "string"}, "description": "the key's mod revision, quoted"},
    "X-Revision": {"schema": {"type": "integer"}, "description": "store revision of the read"},
    "X-Create-Revision": {"schema": {"type": "integer"}},
    "X-Mod-Revision": {"schema": {"type": "integer"}},
    "X-Version": {"schema": {"type": "integer"}, "description": "puts since creation"},
    "X-Lease": {"schema": {"type": "integer"}, "description": "lease id (0: none)"},
}
_CAS = [
    {"name": "prev", "in": "query", "schema": {"type": "string"},
     "description": "Compare-and-set: only if the current value equals this (409 otherwise, "
                    "also when the key is absent)."},
    {"name": "If-Match", "in": "header", "schema": {"type": "string"},
     "description": "Only if the key's mod revision (its ETag) is this, or `*`: only if it "
                    "exists. 409 otherwise."},
]

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "cowsqlpy demo: replicated HTTP key/value store",
        "version": "1.0",
        "description": "Every node of the cluster serves the whole API; reads and writes go "
                       "to the Raft leader through the kvstore `cowsql` backend, so any node "
                       "answers the same. Errors are JSON `{error, message}` with a 4xx/5xx "
                       "status, never a 200.",
    },
    "paths": {
        "/{key}": {
            "parameters": [_KEY],
            "get": {
                "summary": "Read a key (or watch it)",
                "parameters": [_REV, _WATCH, _TIMEOUT],
                "responses": {
                    "200": {"description": "The raw value (or, with `watch`, a WatchResult / "
                                           "an event stream).",
                            "headers": _KV_HEADERS,
                            "content": {"application/octet-stream": {},
                                        "application/json": {"schema": {
                                            "$ref": "#/components/schemas/WatchResult"}},
                                        "text/event-stream": {}}},
                    "400": _err("Bad key or parameter."),
                    "404": _err("The key does not exist (`key_not_found`)."),
                    "410": _err("`rev` was compacted (`compacted`)."),
                    "503": _unavailable(),
                },
            },
            "put": {
                "summary": "Write a key",
                "parameters": [
                    {"name": "ttl", "in": "query",
                     "schema": {"type": "integer", "minimum": 1, "maximum": 604800},
                     "description": "Temporary key: attached to a new lease of this many "
                                    "seconds; gone when it expires (a later PUT without ttl "
                                    "makes it permanent again)."},
                    *_CAS,
                    {"name": "If-None-Match", "in": "header",
                     "schema": {"type": "string", "enum": ["*"]},
                     "description": "Create only: 409 if the key exists."},
                ],
                "requestBody": {"description": f"The value, raw bytes, at most "
                                               f"{MAX_VALUE_BYTES} bytes (1.5 MiB).",
                                "content": {"application/octet-stream": {}}},
                "responses": {
                    "200": {"description": "Updated.", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/PutResult"}}}},
                    "201": {"description": "Created.", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/PutResult"}}}},
                    "400": _err("Bad key, parameter or header."),
                    "409": _err("Compare-and-set failed (`compare_failed`; `current` holds "
                                "the key or null)."),
                    "413": _err("Value over 1.5 MiB (`value_too_large`)."),
                    "503": _unavailable(),
                },
            },
            "delete": {
                "summary": "Delete a key",
                "parameters": _CAS,
                "responses": {
                    "200": {"description": "Deleted.", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/DeleteResult"}}}},
                    "400": _err("Bad key, parameter or header."),
                    "404": _err("The key does not exist."),
                    "409": _err("Compare-and-delete failed."),
                    "503": _unavailable(),
                },
            },
        },
        "/": {
            "get": {
                "summary": "Status page (no query) or range listing / range watch",
                "parameters": [*_RANGE,
                               {"name": "limit", "in": "query",
                                "schema": {"type": "integer", "minimum": 0}},
                               {"name": "keys_only", "in": "query",
                                "schema": {"type": "boolean"}},
                               {"name": "count_only", "in": "query",
                                "schema": {"type": "boolean"}},
                               _REV, _WATCH, _TIMEOUT],
                "responses": {
                    "200": {"description": "HTML status page without a query; else the "
                                           "listing (sorted by key) or watch result.",
                            "content": {"text/html": {}, "application/json": {"schema": {
                                "$ref": "#/components/schemas/RangeResult"}}}},
                    "400": _err("Bad parameter (e.g. both prefix and start)."),
                    "410": _err("`rev` was compacted."),
                    "503": _unavailable(),
                },
            },
            "delete": {
                "summary": "Delete every key of a range, in one revision",
                "parameters": _RANGE,
                "responses": {"200": {"description": "Deleted.", "content": {
                    "application/json": {"schema": {
                        "$ref": "#/components/schemas/DeleteResult"}}}},
                    "400": _err("Bad parameter."), "503": _unavailable()},
            },
        },
        "/_cluster": {"get": {
            "summary": "Nodes, roles, leader, store revision, per-node health, recent writes",
            "responses": {"200": {"description": "The cluster as the leader sees it.",
                                  "content": {"application/json": {"schema": {
                                      "$ref": "#/components/schemas/Cluster"}}}},
                          "503": _unavailable()}}},
        "/_health": {"get": {
            "summary": "200 if this node can serve requests (the leader answered a read)",
            "responses": {"200": {"description": "ok", "content": {"application/json": {}}},
                          "503": _unavailable()}}},
        "/_openapi.json": {"get": {"summary": "This document",
                                   "responses": {"200": {"description": "OpenAPI 3.1"}}}},
    },
    "components": {"schemas": {
        "Error": {"type": "object", "required": ["error", "message"], "properties": {
            "error": {"type": "string", "examples": ["key_not_found", "bad_key",
                                                     "bad_parameter", "bad_header",
                                                     "value_too_large", "compare_failed",
                                                     "compacted", "no_quorum",
                                                     "outcome_unknown", "method_not_allowed"]},
            "message": {"type": "string"},
            "current": {"description": "409 only: the key now, or null"}}},
        "KeyValue": {"type": "object", "properties": {
            "key": {"type": "string"},
            "value": {"type": "string", "description": "UTF-8 values"},
            "value_b64": {"type": "string", "description": "other values, base64"},
            "create_revision": {"type": "integer"}, "mod_revision": {"type": "integer"},
            "version": {"type": "integer"}, "lease": {"type": "integer"}}},
        "RangeResult": {"type": "object", "properties": {
            "revision": {"type": "integer"}, "count": {"type": "integer"},
            "more": {"type": "boolean"},
            "kvs": {"type": "array", "items": {"$ref": "#/components/schemas/KeyValue"}}}},
        "PutResult": {"type": "object", "properties": {
            "key": {"type": "string"}, "revision": {"type": "integer"},
            "created": {"type": "boolean"}, "lease": {"type": "integer"},
            "ttl": {"type": "integer"}}},
        "DeleteResult": {"type": "object", "properties": {
            "key": {"type": "string"}, "revision": {"type": "integer"},
            "deleted": {"type": "integer"}}},
        "Event": {"type": "object", "properties": {
            "type": {"type": "string", "enum": ["put", "delete"]},
            "key": {"type": "string"}, "value": {"type": "string"},
            "value_b64": {"type": "string"}, "revision": {"type": "integer"},
            "create_revision": {"type": "integer"}, "version": {"type": "integer"},
            "lease": {"type": "integer"}}},
        "WatchResult": {"type": "object", "properties": {
            "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
            "next_rev": {"type": "integer",
                         "description": "pass as `rev` to continue without gaps"}}},
        "Cluster": {"type": "object", "properties": {
            "node": {"type": "object", "description": "the node that answered"},
            "leader": {"type": ["string", "null"], "description": "leader's db address"},
            "revision": {"type": "integer"},
            "nodes": {"type": "array", "items": {"type": "object", "properties": {
                "id": {"type": "string"}, "db": {"type": "string"},
                "api": {"type": ["string", "null"]},
                "role": {"type": "string", "enum": ["voter", "stand-by", "spare"]},
                "leader": {"type": "boolean"},
                "healthy": {"type": ["boolean", "null"]}}}},
            "recent": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}}},
    }},
}
