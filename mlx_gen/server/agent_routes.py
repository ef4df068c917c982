"""The routes beyond chat and completions: Anthropic Messages, OpenAI Responses,
``/metrics`` and ``/apply-template`` (all on the same state and worker)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from mlx_gen.server.messages_api.routes import count_tokens, create_message
from mlx_gen.server.messages_api.schemas import CountTokensRequest, MessagesRequest
from mlx_gen.server.metrics import PrometheusMetrics
from mlx_gen.server.responses_api.routes import create_response
from mlx_gen.server.responses_api.schemas import ResponsesRequest
from mlx_gen.server.schemas import ChatRequest
from mlx_gen.server.state import ServerState
from mlx_gen.server.tokenizer_routes import apply_template

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def add_agent_routes(
    app: FastAPI, state: ServerState, metrics: PrometheusMetrics, auth: list
) -> None:
    """Register the routes (``auth``: the API-key dependency)."""

    @app.post("/v1/messages", dependencies=auth)
    async def messages(req: MessagesRequest, request: Request):
        return await create_message(state, req, request)

    @app.post("/v1/messages/count_tokens", dependencies=auth)
    async def messages_count_tokens(req: CountTokensRequest) -> dict:
        return await count_tokens(state, req)

    @app.post("/v1/responses", dependencies=auth)
    async def responses(req: ResponsesRequest, request: Request):
        return await create_response(state, req, request)

    @app.post("/apply-template", dependencies=auth)
    async def apply_template_route(req: ChatRequest) -> dict:
        return await run_in_threadpool(apply_template, state, req)

    @app.get("/metrics", dependencies=auth)
    async def metrics_route() -> Response:
        body = await run_in_threadpool(metrics.exposition)
        return Response(body, media_type=CONTENT_TYPE)
