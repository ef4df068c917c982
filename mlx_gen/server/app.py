"""The FastAPI application: routes, the API-key check, and the worker's lifetime.

``create_app(model, ...)`` builds an app around a loaded model; the worker thread
starts with the app and stops (failing what is pending) when it shuts down.
"""

from __future__ import annotations

import hmac
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request

from mlx_gen.loading.loader import LoadedModel
from mlx_gen.prefix_cache import PrefixCache
from mlx_gen.server.chat import chat_completions
from mlx_gen.server.completions import completions
from mlx_gen.server.errors import ApiError, install_error_handlers
from mlx_gen.server.responses import (
    DetokenizeResponse,
    ModelCard,
    ModelList,
    TokenizeResponse,
    TokenizerInfo,
)
from mlx_gen.server.schemas import (
    ChatRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
)
from mlx_gen.server.settings_map import Limits, context_length
from mlx_gen.server.state import ServerState
from mlx_gen.server.tokenizer_routes import detokenize, tokenize, tokenizer_info
from mlx_gen.server.worker import Worker


def create_app(
    model: LoadedModel,
    *,
    name: str,
    max_batch_size: int = 16,
    max_queue: int = 64,
    max_tokens_limit: int | None = None,
    api_key: str | None = None,
    strict: bool = False,
    prefix_cache: PrefixCache | None = None,
) -> FastAPI:
    """An OpenAI-compatible app serving ``model`` as ``name``.

    Args:
        model: The loaded model.
        name: The model id clients send (others get a 404).
        max_batch_size: Requests decoded at once.
        max_queue: Requests that may wait beyond those (then 429).
        max_tokens_limit: The most tokens one request may ask for (``None``: the context).
        api_key: Require ``Authorization: Bearer <api_key>`` (constant-time compare).
        strict: Refuse unknown request fields with a 400.
        prefix_cache: The prefix cache every request shares (``None``: none).
    """
    for label, value, low in [("max_batch_size", max_batch_size, 1), ("max_queue", max_queue, 0)]:
        if value < low:
            raise ValueError(f"{label}={value!r} is invalid (expected an int >= {low})")
    worker = Worker(
        model, max_batch_size=max_batch_size, max_queue=max_queue, prefix_cache=prefix_cache
    )
    limits = Limits(max_tokens_limit, max(1, min(64, max_batch_size + max_queue)))
    state = ServerState(model, name, worker, limits, strict, api_key)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        yield
        worker.stop()

    app = FastAPI(title="mlx_gen", lifespan=lifespan)
    app.state.server = state
    install_error_handlers(app)
    _routes(app, state, [Depends(_authorize(api_key))])
    return app


def _routes(app: FastAPI, state: ServerState, auth: list) -> None:
    """Register every endpoint (``auth``: the API-key dependency, on all but /health)."""

    @app.get("/health")
    async def health() -> dict:
        return {
            "status": "ok",
            "in_flight": state.worker.in_flight,
            "generated_tokens": state.worker.generated_tokens,
            "prompt_cache": _cache_health(state.worker.prefix_cache),
        }

    @app.get("/v1/models", dependencies=auth)
    async def models() -> ModelList:
        card = ModelCard(
            id=state.name, created=state.created, max_model_len=context_length(state.model)
        )
        return ModelList(data=[card])

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat(req: ChatRequest, request: Request):
        return await chat_completions(state, req, request)

    @app.post("/v1/completions", dependencies=auth)
    async def complete(req: CompletionRequest, request: Request):
        return await completions(state, req, request)

    @app.post("/tokenize", dependencies=auth)
    async def tokenize_route(req: TokenizeRequest) -> TokenizeResponse:
        return tokenize(state, req)

    @app.post("/detokenize", dependencies=auth)
    async def detokenize_route(req: DetokenizeRequest) -> DetokenizeResponse:
        return detokenize(state, req)

    @app.get("/tokenizer_info", dependencies=auth)
    async def tokenizer_info_route() -> TokenizerInfo:
        return tokenizer_info(state)


def _cache_health(cache: PrefixCache | None) -> dict | None:
    """The prefix cache's size, budget and counters (``None`` when it is off)."""
    if cache is None:
        return None
    return {"entries": len(cache), "bytes": cache.nbytes, "max_bytes": cache.max_bytes,
            **vars(cache.stats)}


def _authorize(api_key: str | None):
    async def check(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), api_key.encode()):
            raise ApiError(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
            )

    return check
