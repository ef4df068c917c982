"""Split generated text into reasoning, content and tool calls, incrementally.

:class:`OutputParser` is fed text as it becomes final and returns typed pieces
(:mod:`mlx_gen.tools.types`). It holds back only what might still be a marker (a
partial ``</think>`` or call trigger), so content streams as it comes. A call's
arguments stream as fragments whose concatenation is the final ``arguments_json``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from mlx_gen.tools.formats.base import ToolFormat
from mlx_gen.tools.reasoning import ReasoningSyntax
from mlx_gen.tools.schema import ToolSpec
from mlx_gen.tools.sections import scan_calls, string_prefix
from mlx_gen.tools.types import (
    ContentDelta,
    ParsedOutput,
    ReasoningDelta,
    StreamPiece,
    ToolCall,
    ToolCallArguments,
    ToolCallStart,
    parse_arguments,
)


def _held(text: str, marker: str) -> int:
    """How many trailing characters of ``text`` could begin ``marker``."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


def new_call_id() -> str:
    """A fresh call id, ``call_`` and 24 hex digits."""
    return "call_" + uuid.uuid4().hex[:24]


class OutputParser:
    """The incremental parser of one answer.

    Args:
        fmt: The call syntax (``None``: no calls are parsed).
        tools: The declared tools.
        reasoning: The think-block markers (``None``: no reasoning).
        reasoning_open: The prompt opened a think block (the answer starts in it).
    """

    def __init__(
        self,
        fmt: ToolFormat | None,
        tools: Sequence[ToolSpec] = (),
        *,
        reasoning: ReasoningSyntax | None = None,
        reasoning_open: bool = False,
    ) -> None:
        self.fmt, self.tools, self.syntax = fmt if tools else None, tools, reasoning
        self.text, self.pos = "", 0
        self.state = "reasoning" if reasoning_open and reasoning else "start"
        self.reasoning: list[str] | None = [] if self.state == "reasoning" else None
        self.content: list[str] = []
        self.sent: list[tuple[str, int]] = []  # per call: id, arguments chars streamed
        self.calls: list[ToolCall] = []
        self.section = 0  # where the current call section starts
        self.base = 0  # calls before the current section

    def feed(self, text: str) -> list[StreamPiece]:
        """Pieces that became final with ``text``."""
        self.text += text
        return self._run(final=False)

    def finish(self) -> list[StreamPiece]:
        """The pieces held back until the end."""
        return self._run(final=True)

    def result(self) -> ParsedOutput:
        """The whole answer, split (call :meth:`finish` first)."""
        reasoning = None if self.reasoning is None else "".join(self.reasoning)
        content = "".join(self.content)  # as generated, but around calls: trimmed
        return ParsedOutput(
            content.strip() if self.calls else content, reasoning, tuple(self.calls)
        )

    def _run(self, final: bool) -> list[StreamPiece]:
        out: list[StreamPiece] = []
        while True:
            before = (self.state, self.pos, len(self.sent))
            getattr(self, "_" + self.state)(out, final)
            if (self.state, self.pos, len(self.sent)) == before:
                return out

    def _emit(self, out: list[StreamPiece], kind: type, end: int) -> None:
        if end > self.pos:
            piece = self.text[self.pos : end]
            (self.reasoning if kind is ReasoningDelta else self.content).append(piece)
            out.append(kind(piece))
            self.pos = end

    def _reasoning(self, out: list[StreamPiece], final: bool) -> None:
        assert self.syntax is not None and self.reasoning is not None
        at = self.text.find(self.syntax.end, self.pos)
        if at < 0:
            keep = 0 if final else _held(self.text[self.pos :], self.syntax.end)
            self._emit(out, ReasoningDelta, len(self.text) - keep)
            return
        self._emit(out, ReasoningDelta, at)
        self.pos, self.state = at + len(self.syntax.end), "after_reasoning"

    def _after_reasoning(self, out: list[StreamPiece], final: bool) -> None:
        rest = self.text[self.pos :]
        if rest.strip() or final:
            self.pos += len(rest) - len(rest.lstrip())
            self.state = "answer"

    def _start(self, out: list[StreamPiece], final: bool) -> None:
        rest = self.text[self.pos :].lstrip()
        if self.syntax is not None and self.reasoning is None:
            if rest.startswith(self.syntax.start):
                self.pos = len(self.text) - len(rest) + len(self.syntax.start)
                self.state, self.reasoning = "reasoning", []
                return
            if self.syntax.start.startswith(rest) and not final:
                return  # (an empty or partial start marker)
        self.state = "answer"

    def _answer(self, out: list[StreamPiece], final: bool) -> None:
        fmt = self.fmt
        if fmt is None or fmt.anywhere:
            self.state = "content"
            return
        rest = self.text[self.pos :]
        lead = len(rest) - len(rest.lstrip())
        body = rest[lead:]
        if body.startswith(fmt.trigger):
            self.section, self.state = self.pos + lead, "calls"
        elif fmt.trigger.startswith(body) and not final:
            return
        else:
            self.state = "response" if fmt.response else "content"

    def _content(self, out: list[StreamPiece], final: bool) -> None:
        fmt = self.fmt
        at = -1 if fmt is None else self.text.find(fmt.trigger, self.pos)
        if at < 0:
            keep = 0 if final or fmt is None else _held(self.text[self.pos :], fmt.trigger)
            self._emit(out, ContentDelta, len(self.text) - keep)
            return
        self._emit(out, ContentDelta, at)
        self.section, self.state = at, "calls"

    def _response(self, out: list[StreamPiece], final: bool) -> None:
        """The generic format's ``{"response": "..."}``: its string streams as content."""
        rest, head = self.text[self.pos :], '{"response": "'
        if rest.startswith(head):
            text, done = string_prefix(rest[len(head) :])
            sent = sum(map(len, self.content))
            if len(text) > sent:
                self.content.append(text[sent:])
                out.append(ContentDelta(text[sent:]))
            if done or final:
                self.state = "envelope_end"
        elif final or not head.startswith(rest):
            self.state, self.fmt = "content", None  # not an envelope: the text as it is

    def _envelope_end(self, out: list[StreamPiece], final: bool) -> None:
        self.pos = len(self.text)  # the envelope's closing characters

    def _calls(self, out: list[StreamPiece], final: bool) -> None:
        assert self.fmt is not None
        calls, end, ok = scan_calls(self.fmt, self.tools, self.text[self.section :], final=final)
        for i, call in enumerate(calls, start=self.base):
            if i == len(self.sent):
                self.sent.append((new_call_id(), 0))
                out.append(ToolCallStart(i, self.sent[i][0], call.name))
            call_id, streamed = self.sent[i]
            if len(call.args) > streamed:
                out.append(ToolCallArguments(i, call.args[streamed:]))
                self.sent[i] = (call_id, len(call.args))
            if call.complete and i == len(self.calls):
                self.calls.append(
                    ToolCall(call_id, call.name, parse_arguments(call.args), call.args)
                )
        if end is None:
            return
        if not calls:  # a trigger that began no call is text
            self.pos = self.section
            self._emit(out, ContentDelta, self.section + len(self.fmt.trigger))
        elif final and not calls[-1].complete:  # cut short (max_tokens): not a call
            self.pos = len(self.text)
        else:
            self.pos = self.section + end
        self.base, self.state = len(self.sent), "content"
