"""The Responses API's typed stream events from the chat path's pieces.

:class:`ItemWriter` turns pieces into output items as OpenAI streams them, each event
numbered (``sequence_number``): reasoning → a ``reasoning`` item
(``response.reasoning_text.delta`` s), text → a ``message`` item
(``response.content_part.added``, ``response.output_text.delta`` s), each tool call → a
``function_call`` item (``response.function_call_arguments.delta`` s). An item opens
with ``response.output_item.added`` at its first piece and closes (its ``.done`` events,
then ``response.output_item.done``) when a piece of another item comes or the answer
ends; an answer with no piece at all still gets one empty ``message`` item.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from mlx_gen.server.chat_run import CallArguments, CallStart, Piece, ReasoningPiece, TextPiece
from mlx_gen.server.responses_api.mapping import message_item, text_part


class Events:
    """Typed server-sent events numbered in order."""

    def __init__(self) -> None:
        self.sequence = 0

    def __call__(self, kind: str, **payload: Any) -> str:
        """One event of type ``kind``."""
        data = {"type": kind, "sequence_number": self.sequence, **payload}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


class ItemWriter:
    """The output-item events of one streamed response.

    Args:
        ev: The event numbering.
        new_id: Makes an item id from a prefix (``msg``, ``rs``, ``fc``).
    """

    def __init__(self, ev: Events, new_id: Callable[[str], str]) -> None:
        self.ev, self.new_id = ev, new_id
        self.items: list[dict] = []  # every item, in its final state once closed
        self.open: dict | None = None
        self.pending: list[dict] = []  # logprobs not yet sent with a text delta

    def _at(self) -> dict:
        return {"item_id": self.open["id"], "output_index": len(self.items) - 1}

    def _start(self, item: dict) -> list[str]:
        out = self._close()
        self.items.append(item)
        self.open = item
        out.append(
            self.ev(
                "response.output_item.added",
                output_index=len(self.items) - 1,
                item={**item, "content": []} if "content" in item else item,
            )
        )
        if item["type"] == "message":
            out.append(
                self.ev(
                    "response.content_part.added", **self._at(), content_index=0, part=text_part("")
                )
            )
        elif item["type"] == "reasoning":
            out.append(
                self.ev(
                    "response.content_part.added",
                    **self._at(),
                    content_index=0,
                    part={"type": "reasoning_text", "text": ""},
                )
            )
        return out

    def _close(self, status: str = "completed") -> list[str]:
        item, out = self.open, []
        if item is None:
            return out
        at = self._at()
        if item["type"] in ("message", "reasoning"):
            part = item["content"][0]
            done = (
                "response.output_text.done"
                if item["type"] == "message"
                else ("response.reasoning_text.done")
            )
            extra = {}
            if item["type"] == "message":
                part["logprobs"] += self.pending
                self.pending, extra = [], {"logprobs": part["logprobs"]}
            out.append(self.ev(done, **at, content_index=0, text=part["text"], **extra))
            out.append(self.ev("response.content_part.done", **at, content_index=0, part=part))
        else:
            out.append(
                self.ev(
                    "response.function_call_arguments.done",
                    **at,
                    arguments=item["arguments"],
                    name=item["name"],
                )
            )
        item["status"] = status
        out.append(self.ev("response.output_item.done", output_index=at["output_index"], item=item))
        self.open = None
        return out

    def write(self, pieces: list[Piece], logprobs: list[dict] | None = None) -> list[str]:
        """The events of ``pieces`` (``logprobs``: the new tokens' entries, sent with the
        next text delta and kept in the message's part)."""
        self.pending += logprobs or []
        out: list[str] = []
        for piece in pieces:
            kind = None if self.open is None else self.open["type"]
            if isinstance(piece, TextPiece):
                if kind != "message":
                    out += self._start(message_item(self.new_id("msg"), "", "in_progress"))
                part, (sent, self.pending) = self.open["content"][0], (self.pending, [])
                part["text"] += piece.text
                part["logprobs"] += sent
                out.append(
                    self.ev(
                        "response.output_text.delta",
                        **self._at(),
                        content_index=0,
                        delta=piece.text,
                        logprobs=sent,
                    )
                )
            elif isinstance(piece, ReasoningPiece):
                if kind != "reasoning":
                    part = {"type": "reasoning_text", "text": ""}
                    item = {
                        "type": "reasoning",
                        "id": self.new_id("rs"),
                        "summary": [],
                        "content": [part],
                        "status": "in_progress",
                    }
                    out += self._start(item)
                self.open["content"][0]["text"] += piece.text
                out.append(
                    self.ev(
                        "response.reasoning_text.delta",
                        **self._at(),
                        content_index=0,
                        delta=piece.text,
                    )
                )
            elif isinstance(piece, CallStart):
                item = {
                    "type": "function_call",
                    "id": self.new_id("fc"),
                    "call_id": piece.id,
                    "name": piece.name,
                    "arguments": "",
                    "status": "in_progress",
                }
                out += self._start(item)
            elif isinstance(piece, CallArguments):
                self.open["arguments"] += piece.fragment
                out.append(
                    self.ev(
                        "response.function_call_arguments.delta", **self._at(), delta=piece.fragment
                    )
                )
        return out

    def finish(self, status: str) -> list[str]:
        """Close the open (last) item with ``status`` (an empty message when there was none)."""
        out = [] if self.items else self._start(message_item(self.new_id("msg"), "", "in_progress"))
        return out + self._close(status)
