"""The command line (``python -m mlx_gen.generate``, ``mlx-gen``): a surface on the public API.

``parser`` defines the flags, ``options`` turns them into typed settings, ``main`` runs
them, ``output`` prints text, tables and JSON, ``batch_io`` reads prompt files and writes
JSONL, ``ranks`` keeps the other ranks of a distributed run quiet, and ``launch`` is
``mlx.launch`` with an exit status. May import every package except ``server``.
"""
