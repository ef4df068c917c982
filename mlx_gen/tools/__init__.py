"""Tool calling and reasoning: tool definitions, call formats as data, the call grammar,
the incremental parser of answers, and the request glue used by every surface.

An engine-level package: it may import ``constraints``, ``processors``, ``loading`` and
the engine modules below the generation layer (``settings``, ``prompts``); the
generation modules (``stream``, ``generation``), the CLI and the server import it.
"""

from mlx_gen.tools.formats import FORMATS, ToolFormat, detect_format, format_named
from mlx_gen.tools.grammar import ToolGrammar
from mlx_gen.tools.parser import OutputParser
from mlx_gen.tools.reasoning import ReasoningSyntax
from mlx_gen.tools.request import ChatPlan, prepare_chat
from mlx_gen.tools.schema import ToolChoice, ToolSpec, check_tool_choice, check_tools
from mlx_gen.tools.types import (
    ContentDelta,
    ParsedOutput,
    ReasoningDelta,
    StreamPiece,
    ToolCall,
    ToolCallArguments,
    ToolCallStart,
)

__all__ = [
    "FORMATS",
    "ChatPlan",
    "ContentDelta",
    "OutputParser",
    "ParsedOutput",
    "ReasoningDelta",
    "ReasoningSyntax",
    "StreamPiece",
    "ToolCall",
    "ToolCallArguments",
    "ToolCallStart",
    "ToolChoice",
    "ToolFormat",
    "ToolGrammar",
    "ToolSpec",
    "check_tool_choice",
    "check_tools",
    "detect_format",
    "format_named",
    "prepare_chat",
]
