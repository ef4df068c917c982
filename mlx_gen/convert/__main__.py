"""``python -m mlx_gen.convert``: see :mod:`mlx_gen.convert.main`."""

from mlx_gen.convert.main import main

raise SystemExit(main())
