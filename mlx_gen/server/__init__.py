"""The OpenAI-compatible HTTP server (``python -m mlx_gen.server``): a surface layer.

FastAPI routes, pydantic request/response models, OpenAI's error shape, and one
generation worker that runs continuous batching on :mod:`mlx_gen.batch`. May import the
engine, ``batch``, the facade and the packages below them.
"""
