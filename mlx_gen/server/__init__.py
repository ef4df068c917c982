"""The OpenAI-compatible HTTP server (``python -m mlx_gen.server``): a surface layer.

FastAPI routes (OpenAI chat/completions, Anthropic Messages in ``messages_api``, OpenAI
Responses in ``responses_api``, Prometheus ``/metrics``), pydantic request/response
models, the error shapes, and one generation worker that runs continuous batching on
:mod:`mlx_gen.batch`. May import the engine, ``batch``, the facade and the packages
below them.
"""
