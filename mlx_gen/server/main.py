"""``python -m mlx_gen.server`` / ``mlx-gen-server``: load a model and serve it.

Prints one line with the URL when the server accepts connections; Ctrl-C (or SIGTERM)
stops it cleanly (pending requests get an error, the worker thread ends). Bad options,
a bad ``--host`` or a port in use print one ``error:`` line and exit with status 2 (the
address is bound before the model loads). The console script starts through
:mod:`mlx_gen_launch`, so a Ctrl-C during start-up exits 130 without a traceback.

Under ``mlx-gen-launch -n N`` (a sharded model) rank 0 serves and the other ranks follow
in lockstep (:mod:`mlx_gen.server.ranks`), each with its shard of the prefix cache.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import uvicorn

import mlx_gen
from mlx_gen.loading.load_flags import add_load_flags, load_options
from mlx_gen.quiet_libraries import quiet_libraries
from mlx_gen.server.app import create_app
from mlx_gen.server.bridge import MAX_UNREAD_EVENTS
from mlx_gen.server.connections import SPARE_DESCRIPTORS, guarded_protocol, raise_descriptor_limit
from mlx_gen.server.prompt_cache_flags import add_cache_flags, open_cache, save_cache
from mlx_gen.server.ranks import (
    REPORT_GRACE,
    RankFlagError,
    add_rank_flags,
    check_rank_flags,
    follow,
    leader_worker,
    process_rank,
    share_cache_budget,
    stop_later,
)
from mlx_gen.server.speculation import add_speculation_flags, open_speculation
from mlx_gen.server.worker import Worker

LOG = logging.getLogger("mlx_gen.server")
LEVELS = ("critical", "error", "warning", "info", "debug")


def build_parser() -> argparse.ArgumentParser:
    """The server's command line (every limit's default is in its help and the README)."""
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
    add_load_flags(p)
    p.add_argument("--model-name", help="the model id clients send (default: --model's name)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default: 8080; 0: any free)")
    _int(p, "--max-batch-size", 16, "requests decoded together")
    _int(p, "--max-queue", 64, "requests that may wait beyond those; more get 429")
    p.add_argument(
        "--max-tokens-limit",
        type=int,
        metavar="N",
        help="the most tokens one request may ask for (default: the context)",
    )
    _int(p, "--max-body-bytes", 16 * 2**20, "the most bytes of a request body; more get 413")
    p.add_argument(
        "--max-prompt-chars",
        type=int,
        metavar="N",
        help="the most characters of prompt text, checked before tokenizing (default: "
        "8 x the context length; 1 Mi without a known context)",
    )
    _int(p, "--max-unread-events", MAX_UNREAD_EVENTS, "events a streaming client may leave "
         "unread; then its request is cancelled")  # fmt: skip
    _int(p, "--max-connections", 2048, "open connections; one more is answered 503 and closed")
    _int(p, "--timeout-keep-alive", 5, "seconds an idle keep-alive connection stays open")
    _int(p, "--header-timeout", 10, "seconds a connection has to send a request's headers")
    _int(p, "--body-timeout", 60, "seconds a request's body may take to arrive; then 408")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY'")
    p.add_argument("--strict", action="store_true", help="refuse unknown request fields (400)")
    p.add_argument(
        "--docs", action="store_true", help="serve /docs, /redoc and /openapi.json (behind the key)"
    )
    p.add_argument("--log-level", choices=LEVELS, default="warning", help="default: warning")
    add_cache_flags(p)
    add_speculation_flags(p)
    add_rank_flags(p)
    return p


def _int(p: argparse.ArgumentParser, flag: str, default: int, what: str) -> None:
    """Add an int option ``flag`` whose help says ``what`` and its default."""
    help_text = f"{what} (default: {default})"
    p.add_argument(flag, type=int, default=default, metavar="N", help=help_text)


class _Server(uvicorn.Server):
    """uvicorn's server, announcing the URL once it listens."""

    on_signal = None  # called first when SIGINT/SIGTERM arrives (the distributed server)

    def handle_exit(self, sig: int, frame: object) -> None:
        if self.on_signal is not None:
            self.on_signal()
        super().handle_exit(sig, frame)

    async def startup(self, sockets=None) -> None:  # noqa: ANN001 - uvicorn's signature
        await super().startup(sockets=sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            print(f"mlx_gen server ready on http://{host}:{port}/v1", flush=True)


def served_name(model_arg: str | None, model: mlx_gen.LoadedModel) -> str:
    """The default model id: ``--model`` as given, else the embedded file's stem."""
    return model_arg or Path(model.source).stem


def _check(args: argparse.Namespace) -> None:
    """Refuse out-of-range options and an empty key (one message naming the flag)."""
    minimums = {"max_batch_size": 1, "max_tokens_limit": 1, "max_queue": 0}
    minimums |= dict.fromkeys(("max_body_bytes", "max_prompt_chars", "max_unread_events"), 1)
    minimums |= dict.fromkeys(("max_connections", "timeout_keep_alive", "header_timeout"), 1)
    minimums |= {"body_timeout": 1}
    for name, low in minimums.items():
        value = getattr(args, name)
        if value is not None and value < low:
            raise ValueError(f"--{name.replace('_', '-')} {value} is invalid (expected >= {low})")
    if not 0 <= args.port < 65536:
        raise ValueError(f"--port {args.port} is invalid (expected 0..65535)")
    if args.api_key is not None and not args.api_key.strip():
        raise ValueError(
            f"--api-key {args.api_key!r} is invalid: an empty key would let anyone in "
            "(leave --api-key out to serve without a key)"
        )


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``.

    Raises:
        OSError: naming the address (a bad host, a port in use, no permission).
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as err:
        raise OSError(f"--host {host!r} is not an address to listen on: {err}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return sock


def _connection_limit(wanted: int) -> int:
    """``wanted``, lowered (with a warning) to what the descriptor limit allows."""
    room = raise_descriptor_limit() - SPARE_DESCRIPTORS
    if wanted > room:
        LOG.warning("--max-connections %d lowered to %d (the descriptor limit)", wanted, room)
        return max(1, room)
    return wanted


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until interrupted; return the exit status.

    Library chatter (transformers' warnings, Python warnings) stays off while it runs
    (:func:`~mlx_gen.quiet_libraries.quiet_libraries`): errors reach clients and the log
    in mlx_gen's own words.
    """
    with quiet_libraries():
        return _serve(build_parser().parse_args(argv))


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    rank = 0
    try:
        _check(args)
        rank = process_rank()
        sock = _listen(args.host, args.port) if rank == 0 else None  # rank 0 serves HTTP
        model = mlx_gen.load(args.model, **load_options(args))
        ranked = model.group is not None and model.group.size() > 1
        if ranked:
            check_rank_flags(args)
            share_cache_budget(model, args)
        cache = open_cache(model, args)
        speculation = open_speculation(model, args, ranked=ranked)
    except (ValueError, OSError) as err:
        if rank and isinstance(err, RankFlagError):  # rank 0 refuses it too and says so
            time.sleep(REPORT_GRACE)
            return 2
        who = f"(rank {rank}) " if rank else ""  # rank 0's line is the usual one
        print(f"error: {who}{' '.join(str(err).split())}", file=sys.stderr)
        return 2
    if ranked and rank != 0:
        return follow(model, args, cache)
    server: list[_Server] = []  # set below; a rank failure asks it to stop
    make_worker = leader_worker(model, args, lambda: stop_later(server[0])) if ranked else Worker
    app = create_app(
        model,
        name=args.model_name or served_name(args.model, model),
        max_batch_size=args.max_batch_size,
        max_queue=args.max_queue,
        max_tokens_limit=args.max_tokens_limit,
        api_key=args.api_key,
        strict=args.strict,
        max_body_bytes=args.max_body_bytes,
        body_timeout=args.body_timeout,
        max_prompt_chars=args.max_prompt_chars,
        max_unread_events=args.max_unread_events,
        docs=args.docs,
        prefix_cache=cache,
        make_worker=make_worker,
        speculation=speculation,
    )
    max_connections = _connection_limit(args.max_connections)
    protocol = guarded_protocol(max_connections=max_connections, header_timeout=args.header_timeout)
    config = uvicorn.Config(
        app,
        http=protocol,
        log_level=args.log_level,
        timeout_graceful_shutdown=5,
        timeout_keep_alive=args.timeout_keep_alive,
        limit_concurrency=max_connections + 1,  # our protocol answers the one over with 503
        h11_max_incomplete_event_size=16 * 1024,
    )
    server.append(_Server(config))
    if ranked:
        worker = app.state.server.worker
        server[0].on_signal = worker.stopped_by_launcher
    try:
        server[0].run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    save_cache(cache, args)
    if ranked:  # the worker thread may be stuck in a collective: leave without joining it
        failed = app.state.server.worker.failure is not None
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1 if failed else 0)
    return 0
