"""Anthropic's stream events from the chat path's pieces.

:class:`BlockWriter` turns pieces into content blocks as Anthropic streams them: text
→ a ``text`` block with ``text_delta`` s, reasoning → a ``thinking`` block with
``thinking_delta`` s, each tool call → a ``tool_use`` block whose ``input`` arrives as
``input_json_delta`` fragments. A block is opened by its first piece and closed
(``content_block_stop``) when a piece of another block comes or the answer ends; an
answer with no piece at all still gets one empty ``text`` block.

With mlx_gen's ``logprobs`` extension, the chat logprob entries of the tokens generated
since the previous delta ride on the next ``content_block_delta`` (any kind) as its
``logprobs`` member; those still unsent at the end go on ``message_delta``
(:meth:`BlockWriter.unsent`), so the stream's entries, concatenated, are the reply's.
"""

from __future__ import annotations

import json

from mlx_gen.server.chat_run import CallArguments, CallStart, Piece, ReasoningPiece, TextPiece


def event(name: str, payload: dict) -> str:
    """One server-sent event with its ``event:`` line, as Anthropic sends them."""
    return f"event: {name}\ndata: {json.dumps({'type': name, **payload})}\n\n"


class BlockWriter:
    """The content-block events of one streamed message."""

    def __init__(self) -> None:
        self.index = -1  # the open block's index (-1: none yet)
        self.kind: str | None = None  # the open block's type, None when closed
        self.pending: list[dict] = []  # logprob entries not yet sent with a delta

    def _open(self, block: dict) -> list[str]:
        out = self._close()
        self.index += 1
        self.kind = block["type"]
        return out + [event("content_block_start", {"index": self.index, "content_block": block})]

    def _close(self) -> list[str]:
        if self.kind is None:
            return []
        self.kind = None
        return [event("content_block_stop", {"index": self.index})]

    def _delta(self, delta: dict) -> str:
        payload = {"index": self.index, "delta": delta}
        if self.pending:
            payload["logprobs"], self.pending = self.pending, []
        return event("content_block_delta", payload)

    def write(self, pieces: list[Piece], logprobs: list[dict] | None = None) -> list[str]:
        """The events of ``pieces`` (``logprobs``: the new tokens' entries, sent with the
        next delta)."""
        self.pending += logprobs or []
        out: list[str] = []
        for piece in pieces:
            if isinstance(piece, TextPiece):
                if self.kind != "text":
                    out += self._open({"type": "text", "text": ""})
                out.append(self._delta({"type": "text_delta", "text": piece.text}))
            elif isinstance(piece, ReasoningPiece):
                if self.kind != "thinking":
                    out += self._open({"type": "thinking", "thinking": "", "signature": ""})
                out.append(self._delta({"type": "thinking_delta", "thinking": piece.text}))
            elif isinstance(piece, CallStart):
                block = {"type": "tool_use", "id": piece.id, "name": piece.name, "input": {}}
                out += self._open(block)
            elif isinstance(piece, CallArguments):
                out.append(
                    self._delta({"type": "input_json_delta", "partial_json": piece.fragment})
                )
        return out

    def unsent(self) -> list[dict]:
        """The logprob entries no delta carried (taken: a second call returns none)."""
        out, self.pending = self.pending, []
        return out

    def finish(self) -> list[str]:
        """Close the open block (or send an empty text block when there was none)."""
        if self.index < 0:
            return self._open({"type": "text", "text": ""}) + self._close()
        return self._close()
