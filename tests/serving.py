"""Run the OpenAI-compatible server in-process on 127.0.0.1 (a free port) for tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from mlx_gen.loading.loader import LoadedModel
from mlx_gen.server.app import create_app


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(model: LoadedModel, *, name: str = "test", **options) -> Iterator[str]:
    """Serve ``model`` as ``name``; yield the base URL (``http://127.0.0.1:PORT``)."""
    port = free_port()
    app = create_app(model, name=name, **options)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
