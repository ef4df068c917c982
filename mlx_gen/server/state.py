"""What every route shares: the model, its name, the worker, the limits and the flags."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from pydantic import BaseModel

from mlx_gen.loading.loader import LoadedModel
from mlx_gen.server.errors import ApiError
from mlx_gen.server.settings_map import Limits
from mlx_gen.server.speculation import ServerSpeculation
from mlx_gen.server.token_text import TokenText
from mlx_gen.server.worker import Worker

#: OpenAI fields accepted and ignored, with the reason (the README's table says the same).
IGNORED = {
    "user": "no accounts: nothing is tracked per user",
    "store": "nothing is stored",
    "metadata": "nothing is stored",
    "service_tier": "one local model, one tier",
}


@dataclass
class ServerState:
    """The server's shared, read-mostly state.

    Attributes:
        model: The loaded model (only the worker runs it).
        name: The model id clients must send (``/v1/models`` lists it).
        worker: The generation worker.
        limits: Per-request limits.
        strict: Refuse unknown request fields.
        api_key: The bearer token required, or ``None``.
        speculation: The default drafter and what requests may ask for.
    """

    model: LoadedModel
    name: str
    worker: Worker
    limits: Limits
    strict: bool = False
    api_key: str | None = None
    speculation: ServerSpeculation = field(default_factory=ServerSpeculation)
    created: int = field(default_factory=lambda: int(time.time()))
    texts: TokenText = field(init=False)

    def __post_init__(self) -> None:
        self.texts = TokenText(self.model.tokenizer)

    def check_model(self, requested: str | None) -> None:
        """404 unless ``requested`` is this server's model (or omitted)."""
        if requested not in (None, "", self.name):
            raise ApiError(
                404,
                f"model {requested!r} does not exist; this server serves {self.name!r}",
                param="model",
                code="model_not_found",
            )

    def check_fields(self, req: BaseModel, *, path: str = "") -> None:
        """With ``--strict``, 400 for any field the request model does not know."""
        if not self.strict:
            return
        unknown = [k for k in (req.model_extra or {}) if k not in IGNORED]
        if unknown:
            raise ApiError(
                400,
                f"unknown field(s) {json.dumps(unknown)} (the server runs with --strict)",
                param=path + unknown[0],
            )
        for name in type(req).model_fields:
            value = getattr(req, name)
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                if isinstance(item, BaseModel):
                    where = f"{name}[{i}]." if isinstance(value, list) else f"{name}."
                    self.check_fields(item, path=path + where)
