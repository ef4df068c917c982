"""``response_format`` → a structured-output constraint (never silently ignored).

``{"type": "text"}`` is plain generation. ``json_object`` and ``json_schema`` map onto
``mlx_gen.JsonObject()`` / ``mlx_gen.JsonSchema(schema)``, passed as
``GenerationSettings(constraint=...)``; a schema the constraint compiler refuses (an
unsupported keyword, invalid JSON Schema) is a 400 naming it.
"""

from __future__ import annotations

from typing import Any

from mlx_gen import JsonObject, JsonSchema
from mlx_gen.server.errors import ApiError
from mlx_gen.server.schemas import ResponseFormat


def constraint_for(response_format: ResponseFormat | None) -> Any:
    """The constraint for ``response_format``, or ``None`` for plain text.

    Raises:
        ApiError: 400 when ``json_schema`` has no schema or the schema is refused.
    """
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return JsonObject()
    spec = response_format.json_schema
    if spec is None or spec.schema_ is None:
        raise ApiError(
            400,
            "response_format.json_schema.schema is required for type json_schema",
            param="response_format.json_schema",
        )
    try:
        return JsonSchema(spec.schema_)
    except (ValueError, TypeError) as err:
        raise ApiError(400, f"response_format: {err}", param="response_format") from err
