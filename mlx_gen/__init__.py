"""mlx_gen: controlled, inspectable text generation on Apple's MLX.

The API is layered:

* :func:`load` — a checkpoint (folder, Hub id, ``.gguf``, or the embedded default)
  with all of its generation settings;
* :func:`generate_tokens` — token ids in, tokens out (:func:`speculative_generate_tokens`
  with a drafter, ``GenerationSettings(speculative=PromptLookup() | DraftModel(...))``);
* :func:`stream_generate` — text chunks as they become final;
* :func:`generate` — one call, one :class:`GenerationResult`;
* :func:`score` and :func:`next_token_distribution` — inspect probabilities;
* :class:`JsonSchema`, :class:`JsonObject`, :class:`Regex`, :class:`Grammar`,
  :class:`Choice` — structured output, via ``GenerationSettings(constraint=...)``;
* ``generate(model, messages=..., tools=[...], tool_choice=...)`` — tool calls valid by
  construction (:class:`ToolCall`), reasoning split off, in the model's own format
  (:mod:`mlx_gen.tools`); ``GenerationSettings(max_thinking_tokens=N)`` — a thinking budget;
* :func:`generate_batch` / :func:`stream_generate_batch` — many prompts decoded together,
  one result per prompt; :func:`score_batch` — many (prompt, continuation) pairs.

The command line lives in :mod:`mlx_gen.cli.main` (``python -m mlx_gen.generate``).
"""

from mlx_gen.batch.generation import BatchPrompt, generate_batch, stream_generate_batch
from mlx_gen.batch.scoring import score_batch
from mlx_gen.constraints import Choice, Constraint, Grammar, JsonObject, JsonSchema, Regex
from mlx_gen.decode import generate_tokens
from mlx_gen.drafters import DraftModel, PromptLookup
from mlx_gen.generated_token import GeneratedToken
from mlx_gen.generation import GenerationResult, generate
from mlx_gen.loading.generation_config import GenerationConfig
from mlx_gen.loading.loader import LoadedModel, load
from mlx_gen.logprobs.report import TokenLogprob
from mlx_gen.prefix_cache import PrefixCache
from mlx_gen.processors.context import LogitsProcessor, ProcessorContext, from_mlx_lm
from mlx_gen.prompt_cache import PromptCache
from mlx_gen.sampling import SamplingParams
from mlx_gen.scoring import Distribution, ScoreResult, next_token_distribution, score
from mlx_gen.settings import GenerationSettings
from mlx_gen.speculative import SpeculationStats, speculative_generate_tokens
from mlx_gen.stopping import StoppingContext
from mlx_gen.stream import GenerationChunk, GenerationStats, stream_generate
from mlx_gen.tools import (
    ContentDelta,
    ParsedOutput,
    ReasoningDelta,
    ToolCall,
    ToolCallArguments,
    ToolCallStart,
)

__all__ = [
    "BatchPrompt",
    "Choice",
    "Constraint",
    "Grammar",
    "JsonObject",
    "JsonSchema",
    "Regex",
    "generate_batch",
    "score_batch",
    "stream_generate_batch",
    "Distribution",
    "GeneratedToken",
    "GenerationChunk",
    "GenerationConfig",
    "GenerationResult",
    "GenerationSettings",
    "GenerationStats",
    "LoadedModel",
    "LogitsProcessor",
    "ProcessorContext",
    "PrefixCache",
    "PromptCache",
    "SamplingParams",
    "ScoreResult",
    "StoppingContext",
    "TokenLogprob",
    "from_mlx_lm",
    "generate",
    "generate_tokens",
    "load",
    "next_token_distribution",
    "score",
    "stream_generate",
    "DraftModel",
    "PromptLookup",
    "SpeculationStats",
    "speculative_generate_tokens",
    "ContentDelta",
    "ParsedOutput",
    "ReasoningDelta",
    "ToolCall",
    "ToolCallArguments",
    "ToolCallStart",
]
__version__ = "0.1.0"
