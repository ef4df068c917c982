"""Structured output: a pydantic model in, a validated object out.

``mg.JsonSchema(City)`` turns the model's JSON Schema into a grammar (llguidance, compiled
once per schema and tokenizer); at every step the tokens that cannot continue a valid
document are set to ``-inf`` after all other processors and before sampling, so every
output parses and validates, greedy or sampled (the tests sample 50 runs per schema). The EOS ids are allowed exactly when
the document is complete. The processed logprobs are those of the distribution actually
sampled from: at a forced position (a key name, a quote) the chosen token has
probability 1.

Pitfalls this demonstrates: mlx-lm's server silently ignores ``response_format``
(mlx-lm#1007); llguidance's own MLX kernel is Metal-only (mlx_gen applies the mask with
a plain MLX op that runs on the CPU too).

Run: ``python examples/json_schema.py`` (embedded SmolLM2, about 30 s on a CPU).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

import mlx_gen as mg


class City(BaseModel):
    """What the model must return (``extra="forbid"``: no keys beyond these, else the
    schema allows any extra key and a model may add some until ``max_tokens``)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=20)
    country: str = Field(max_length=20)
    population_millions: int = Field(ge=0, le=40)
    kind: Literal["capital", "port", "other"]


def main() -> None:
    model = mg.load()
    messages = [{"role": "user", "content": "Describe Paris as a JSON object."}]
    settings = mg.GenerationSettings(
        constraint=mg.JsonSchema(City),
        max_tokens=60,
        temperature=0.0,
        logprobs=0,
        logprobs_modes=("raw", "processed"),
    )
    result = mg.generate(model, messages=messages, settings=settings)
    print(f"text: {result.text}")
    print(f"finish: {result.finish_reason}, complete: {result.constraint_complete}")
    city = City.model_validate_json(result.text)
    print(f"validated: {city!r}")
    forced = sum(
        1 for lp in result.logprobs if math.isclose(lp["processed"].logprob, 0.0, abs_tol=1e-6)
    )
    print(f"{forced} of {len(result.logprobs)} tokens were forced by the schema (probability 1)")


if __name__ == "__main__":
    main()
