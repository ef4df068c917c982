"""``python -m mlx_gen_launch``: the ``mlx-gen`` console script (tests start it this way)."""

from mlx_gen_launch import mlx_gen

raise SystemExit(mlx_gen())
