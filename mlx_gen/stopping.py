"""When generation stops, decided on plain ints and text (never on arrays).

Finish reasons:

* ``"stop"``: a generated token is in the EOS set. Only *generated* tokens are
  checked, so an EOS-equal id in the prompt (stories260K's BOS is also an EOS) never
  stops anything. The EOS token is not rendered as text.
* ``"stop_string"``: the decoded text contains a stop string. Matching runs on text,
  so any tokenization of the string stops generation. The text is cut before the
  stop string (or after it with ``include_stop_str``); while streaming, text that may
  be the start of a stop string is held back until it is resolved.
* ``"criterion"``: a custom ``criterion(ctx) -> bool`` returned true.
* ``"length"``: ``max_tokens`` tokens were generated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

FINISH_REASONS = ("stop", "stop_string", "criterion", "length")


@dataclass(frozen=True)
class StoppingContext:
    """What a stopping criterion sees after each generated token.

    Attributes:
        prompt_ids: The prompt's token ids.
        generated_ids: The generated ids so far, the newest last.
        text: The text generated so far (before stop-string cutting).
    """

    prompt_ids: Sequence[int]
    generated_ids: Sequence[int]
    text: str

    @property
    def step(self) -> int:
        """Number of tokens generated so far."""
        return len(self.generated_ids)


class StopStrings:
    """Incremental stop-string matcher over streamed text.

    Feed text deltas; get back the text that is safe to emit now. Text that could be
    the beginning of a stop string is held back until later text resolves it.

    Args:
        stops: The stop strings (non-empty).
        include_stop_str: Emit the matched stop string itself.

    >>> s = StopStrings(["END"])
    >>> s.feed("one E"), s.feed("N"), s.feed("D two")
    ('one ', '', '')
    >>> s.matched
    'END'
    """

    def __init__(self, stops: Sequence[str], *, include_stop_str: bool = False) -> None:
        if any(not s for s in stops):
            raise ValueError(f"stop strings must be non-empty, got {list(stops)!r}")
        self.stops = tuple(stops)
        self.include_stop_str = include_stop_str
        self.matched: str | None = None
        self._pending = ""

    def feed(self, delta: str) -> str:
        """Add ``delta``; return the text that can be emitted now ('' after a match)."""
        if self.matched is not None:
            return ""
        text = self._pending + delta
        hits = [(text.find(s), -len(s), s) for s in self.stops if s in text]
        if hits:
            start, _, stop = min(hits)
            self.matched, self._pending = stop, ""
            return text[: start + (len(stop) if self.include_stop_str else 0)]
        hold = self._longest_partial(text)
        self._pending = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]

    def flush(self) -> str:
        """Release held-back text at the end of generation."""
        out, self._pending = self._pending, ""
        return out if self.matched is None else ""

    def _longest_partial(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best
