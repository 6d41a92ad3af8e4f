"""The server's OpenAPI 3.1 description, from the patterns it serves."""

from __future__ import annotations

from typing import Any

from datalayer import __version__


def openapi(patterns: list[str], max_entities: int) -> dict[str, Any]:
    error = {"$ref": "#/components/schemas/Error"}

    def answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
        content = {"application/json": {"schema": schema or error}}
        return {"description": description, "content": content}

    pattern = {
        "name": "pattern",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": patterns},
    }
    errors = {
        "400": answer("a field is missing, of the wrong type or unknown: 'field' names it"),
        "401": answer("no bearer token, or not one the server knows"),
        "403": answer("the token may not read this pattern"),
        "404": answer("no such pattern: the message lists those served"),
        "413": answer(f"the body is too large, or more than {max_entities} entity rows"),
        "503": answer("a store did not answer: retry after the Retry-After header's seconds"),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "datalayer feature server", "version": __version__},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "FeaturesRequest": {
                    "type": "object",
                    "required": ["entities"],
                    "additionalProperties": False,
                    "properties": {
                        "entities": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": max_entities,
                            "items": {"type": "object", "description": "join keys"},
                        },
                        "as_of": {"type": "string", "format": "date-time"},
                        "features": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"type": "string", "description": "view:feature"},
                        },
                    },
                },
                "FeaturesResponse": {
                    "type": "object",
                    "properties": {
                        "features": {
                            "type": "object",
                            "description": "the join keys, then one column per view__feature, "
                            "one value per entity row (null: missing or older than the TTL)",
                            "additionalProperties": {"type": "array"},
                        }
                    },
                },
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["status", "message"],
                            "properties": {
                                "status": {"type": "integer"},
                                "message": {"type": "string"},
                                "field": {"type": "string"},
                            },
                        }
                    },
                },
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/features/{pattern}": {
                "post": {
                    "summary": "Online features of entity rows, as online() reads them",
                    "parameters": [pattern],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/FeaturesRequest"}
                            }
                        },
                    },
                    "responses": {
                        "200": answer(
                            "the features", {"$ref": "#/components/schemas/FeaturesResponse"}
                        ),
                        **errors,
                    },
                }
            },
            "/v1/predictions/{pattern}": {
                "post": {
                    "summary": "Log a model's prediction(s) from the read request_id (the "
                    "read's X-Request-ID), one per entity in 'predictions'; needs the read "
                    "scope and a pattern with a log",
                    "parameters": [pattern],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["request_id"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "request_id": {"type": "string", "maxLength": 200},
                                        "prediction": {},
                                        "predictions": {"type": "array"},
                                        "model": {"type": "string", "maxLength": 200},
                                        "version": {"type": "string", "maxLength": 200},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": answer(
                            "queued on the log",
                            {"type": "object", "properties": {"logged": {"type": "integer"}}},
                        ),
                        **errors,
                        "409": answer("the pattern has no log"),
                    },
                }
            },
            "/get-online-features": {
                "post": {
                    "summary": "Feast's feature-server request and answer (feature_service or "
                    "features, columnar entities; values with statuses and event times)",
                    "requestBody": {"required": True, "content": {"application/json": {}}},
                    "responses": {
                        "200": {"description": "Feast's GetOnlineFeaturesResponse"},
                        **errors,
                    },
                }
            },
            "/push": {
                "post": {
                    "summary": "Feast's push: rows for the view a push source feeds "
                    "(push_source_name, df, to); needs the push scope",
                    "requestBody": {"required": True, "content": {"application/json": {}}},
                    "responses": {"200": {"description": "the rows pushed"}, **errors},
                }
            },
            "/health": {
                "get": {
                    "summary": "The process answers",
                    "security": [],
                    "responses": {"200": {"description": "alive"}},
                }
            },
            "/ready": {
                "get": {
                    "summary": "Every store of the served patterns answers",
                    "security": [],
                    "responses": {"200": {"description": "ready"}, "503": errors["503"]},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "security": [],
                    "responses": {"200": {"description": "text exposition format"}},
                }
            },
        },
    }
