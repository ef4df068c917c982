"""``response_format`` → a structured-output constraint (never silently ignored).

``{"type": "text"}`` is plain generation. ``json_object`` and ``json_schema`` map onto
``mlx_gen.JsonObject()`` / ``mlx_gen.JsonSchema(schema)``, passed as
``GenerationSettings(constraint=...)``; where this mlx_gen has no structured output,
they are refused with a 400 rather than ignored.
"""

from __future__ import annotations

from typing import Any

import mlx_gen
from mlx_gen.server.errors import ApiError
from mlx_gen.server.schemas import ResponseFormat


def constraint_for(response_format: ResponseFormat | None) -> Any:
    """The constraint for ``response_format``, or ``None`` for plain text.

    Raises:
        ApiError: 400 when JSON output is asked for and this mlx_gen cannot constrain
            it, or when ``json_schema`` has no schema.
    """
    if response_format is None or response_format.type == "text":
        return None
    json_schema = getattr(mlx_gen, "JsonSchema", None)
    json_object = getattr(mlx_gen, "JsonObject", None)
    if json_schema is None or json_object is None:
        raise ApiError(
            400,
            f"response_format {response_format.type} needs structured output support, "
            "which this mlx_gen does not have; use {'type': 'text'}",
            param="response_format",
        )
    if response_format.type == "json_object":
        return json_object()
    spec = response_format.json_schema
    if spec is None or spec.schema_ is None:
        raise ApiError(
            400,
            "response_format.json_schema.schema is required for type json_schema",
            param="response_format.json_schema",
        )
    try:
        return json_schema(spec.schema_)
    except (ValueError, TypeError) as err:
        raise ApiError(400, f"response_format: {err}", param="response_format") from err
