"""The FastAPI application: routes, the request guard, and the worker's lifetime.

``create_app(model, ...)`` builds an app around a loaded model; the worker thread
starts with the app and stops (failing what is pending) when it shuts down. Every
request passes :class:`~mlx_gen.server.guard.RequestGuard` first (API key, body
limit). Work that costs CPU (tokenizing, template rendering, compiling a
``response_format``) runs in a thread, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from mlx_gen.loading.loader import LoadedModel
from mlx_gen.prefix_cache import PrefixCache
from mlx_gen.server.agent_routes import add_agent_routes
from mlx_gen.server.bridge import MAX_UNREAD_EVENTS
from mlx_gen.server.chat import chat_completions
from mlx_gen.server.chat_features import model_capabilities
from mlx_gen.server.chat_request import apply_chat_template
from mlx_gen.server.completions import completions
from mlx_gen.server.errors import install_error_handlers
from mlx_gen.server.guard import RequestGuard
from mlx_gen.server.messages_api.errors import AnthropicErrors
from mlx_gen.server.metrics import PrometheusMetrics, RequestCounter
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
from mlx_gen.server.settings_map import Limits, context_length, prompt_chars_bound
from mlx_gen.server.speculation import ServerSpeculation, default_speculation
from mlx_gen.server.state import ServerState
from mlx_gen.server.streaming import json_response
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
    max_body_bytes: int = 16 * 2**20,
    body_timeout: float = 60.0,
    max_prompt_chars: int | None = None,
    max_unread_events: int = MAX_UNREAD_EVENTS,
    docs: bool = False,
    prefix_cache: PrefixCache | None = None,
    make_worker: Callable[..., Worker] = Worker,
    speculation: ServerSpeculation | None = None,
) -> FastAPI:
    """An OpenAI-compatible app serving ``model`` as ``name``.

    Args:
        model: The loaded model.
        name: The model id clients send (others get a 404).
        max_batch_size: Requests decoded at once.
        max_queue: Requests that may wait beyond those (then 429).
        max_tokens_limit: The most tokens one request may ask for (``None``: the context).
        api_key: Require ``Authorization: Bearer <api_key>`` or ``x-api-key: <api_key>``
            (constant-time compare, checked before the body is read).
        strict: Refuse unknown request fields with a 400.
        max_body_bytes: The most bytes a request body may have (then 413).
        body_timeout: Seconds a request body may take to arrive (then 408).
        max_prompt_chars: The most characters a text prompt (or all messages) may have
            before tokenizing (``None``: :func:`~.settings_map.prompt_chars_bound`, 8 x
            the context length).
        max_unread_events: Events a streaming client may leave unread (then its
            request is cancelled).
        docs: Serve ``/docs``, ``/redoc`` and ``/openapi.json`` (behind the key).
        prefix_cache: The prefix cache every request shares (``None``: none).
        make_worker: Builds the worker from the model and the options above (the
            distributed server passes :class:`~mlx_gen.server.lockstep.LockstepWorker`).
        speculation: The default drafter and a ``--draft-model`` (``None``: requests
            may ask for prompt lookup, where the model's cache allows it).

    Raises:
        ValueError: A limit below its minimum, or an empty ``api_key``.
    """
    checks = [("max_batch_size", max_batch_size, 1), ("max_queue", max_queue, 0)]
    checks += [("max_body_bytes", max_body_bytes, 1), ("max_prompt_chars", max_prompt_chars, 1)]
    checks += [("max_unread_events", max_unread_events, 1), ("body_timeout", body_timeout, 0.001)]
    for label, value, low in checks:
        if value is not None and value < low:
            raise ValueError(f"{label}={value!r} is invalid (expected >= {low})")
    if api_key is not None and not api_key:
        raise ValueError("api_key='' is invalid (an empty key would let anyone in)")
    metrics = PrometheusMetrics(lambda: worker.running, lambda: worker.in_flight)
    worker = make_worker(
        model,
        max_batch_size=max_batch_size,
        max_queue=max_queue,
        metrics=metrics,
        prefix_cache=prefix_cache,
    )
    chars = max_prompt_chars if max_prompt_chars is not None else prompt_chars_bound(model)
    choices = max(1, min(64, max_batch_size + max_queue))
    limits = Limits(max_tokens_limit, choices, chars, max_unread_events)
    state = ServerState(model, name, worker, limits, strict, api_key)
    state.speculation = speculation or default_speculation(model)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        yield
        worker.stop()

    urls = {} if docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="mlx_gen", lifespan=lifespan, **urls)
    app.state.server = state
    install_error_handlers(app)
    guard = {"api_key": api_key, "max_body_bytes": max_body_bytes, "body_timeout": body_timeout}
    app.add_middleware(RequestGuard, **guard)
    _routes(app, state)
    add_agent_routes(app, state, metrics, auth=[])  # the key: RequestGuard, on the headers
    paths = {route.path for route in app.routes}
    # Added after the guard, so outside it: its 401/408/413 get Anthropic's shape on
    # /v1/messages and are counted.
    app.add_middleware(AnthropicErrors)
    app.add_middleware(RequestCounter, metrics=metrics, routes=paths)
    return app


def _routes(app: FastAPI, state: ServerState) -> None:
    """Register every endpoint (the guard checks the key on all but /health)."""

    @app.get("/health")
    async def health() -> dict:
        return {
            "status": "ok",
            "in_flight": state.worker.in_flight,
            "unsent": state.worker.unsent,
            "generated_tokens": state.worker.generated_tokens,
            "prompt_cache": _cache_health(state.worker.prefix_cache),
        }

    capabilities = model_capabilities(state.model)  # reads the tokenizer once

    @app.get("/v1/models")
    async def models() -> ModelList:
        window = context_length(state.model)
        card = ModelCard(
            id=state.name,
            created=state.created,
            max_model_len=window,
            context_length=window,
            vocab_size=state.model.vocab_size,
            capabilities=capabilities,
        )
        return ModelList(data=[card])

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request):
        return await chat_completions(state, req, request)

    @app.post("/apply-template")
    async def apply_template_route(req: ChatRequest) -> dict:
        return await apply_chat_template(state, req)

    @app.post("/v1/completions")
    async def complete(req: CompletionRequest, request: Request):
        return await completions(state, req, request)

    @app.post("/tokenize", response_model=TokenizeResponse)
    async def tokenize_route(req: TokenizeRequest) -> Response:
        return await run_in_threadpool(json_response, tokenize, state, req)

    @app.post("/detokenize", response_model=DetokenizeResponse)
    async def detokenize_route(req: DetokenizeRequest) -> Response:
        return await run_in_threadpool(json_response, detokenize, state, req)

    @app.get("/tokenizer_info")
    async def tokenizer_info_route() -> TokenizerInfo:
        return tokenizer_info(state)


def _cache_health(cache: PrefixCache | None) -> dict | None:
    """The prefix cache's size, budget and counters (``None`` when it is off)."""
    if cache is None:
        return None
    return {
        "entries": len(cache),
        "bytes": cache.nbytes,
        "max_bytes": cache.max_bytes,
        **vars(cache.stats),
    }
