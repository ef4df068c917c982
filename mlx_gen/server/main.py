"""``python -m mlx_gen.server`` / ``mlx-gen-server``: load a model and serve it.

Prints one line with the URL when the server accepts connections; Ctrl-C (or SIGTERM)
stops it cleanly (pending requests get an error, the worker thread ends). Bad options
print one ``error:`` line and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn

import mlx_gen
from mlx_gen.server.app import create_app
from mlx_gen.server.prompt_cache_flags import add_cache_flags, open_cache, save_cache

LEVELS = ("critical", "error", "warning", "info", "debug")


def build_parser() -> argparse.ArgumentParser:
    """The server's command line."""
    p = argparse.ArgumentParser(
        prog="mlx-gen-server",
        description="An OpenAI-compatible server (chat, completions, logprobs) with "
        "continuous batching on mlx_gen.",
    )
    p.add_argument(
        "--model",
        help="a model folder, a Hub repo id or a .gguf file "
        "(default: the embedded SmolLM2-135M-Instruct)",
    )
    p.add_argument("--model-name", help="the model id clients send (default: --model's name)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default: 8080; 0: any free)")
    p.add_argument(
        "--max-batch-size",
        type=int,
        default=16,
        metavar="N",
        help="requests decoded together (default: 16)",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=64,
        metavar="N",
        help="requests that may wait beyond those; more get 429 (default: 64)",
    )
    p.add_argument(
        "--max-tokens-limit",
        type=int,
        metavar="N",
        help="the most tokens one request may ask for (default: the context)",
    )
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY'")
    p.add_argument("--strict", action="store_true", help="refuse unknown request fields (400)")
    p.add_argument("--log-level", choices=LEVELS, default="warning", help="default: warning")
    add_cache_flags(p)
    return p


class _Server(uvicorn.Server):
    """uvicorn's server, announcing the URL once it listens."""

    async def startup(self, sockets=None) -> None:  # noqa: ANN001 - uvicorn's signature
        await super().startup(sockets=sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            print(f"mlx_gen server ready on http://{host}:{port}/v1", flush=True)


def served_name(model_arg: str | None, model: mlx_gen.LoadedModel) -> str:
    """The default model id: ``--model`` as given, else the embedded file's stem."""
    return model_arg or Path(model.source).stem


def _check(args: argparse.Namespace) -> None:
    for name in ("max_batch_size", "max_tokens_limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} {value} is invalid (expected >= 1)")
    if args.max_queue < 0:
        raise ValueError(f"--max-queue {args.max_queue} is invalid (expected >= 0)")
    if not 0 <= args.port < 65536:
        raise ValueError(f"--port {args.port} is invalid (expected 0..65535)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until interrupted; return the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        _check(args)
        model = mlx_gen.load(args.model)
        if model.group is not None and model.group.size() > 1:
            raise ValueError(
                "the server does not run under mlx.launch yet (each rank would serve on its "
                "own); start it as one process, or use python -m mlx_gen.generate for "
                "tensor-parallel generation"
            )
        cache = open_cache(model, args)
    except (ValueError, OSError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    name = args.model_name or served_name(args.model, model)
    app = create_app(
        model,
        name=name,
        max_batch_size=args.max_batch_size,
        max_queue=args.max_queue,
        max_tokens_limit=args.max_tokens_limit,
        api_key=args.api_key,
        strict=args.strict,
        prefix_cache=cache,
    )
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5
    )
    try:
        _Server(config).run()
    except KeyboardInterrupt:
        pass
    save_cache(cache, args)
    return 0
