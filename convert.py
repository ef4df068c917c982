"""Convert a checkpoint to an MLX folder: ``python convert.py --hf-path SRC --mlx-path DST``."""

from mlx_gen.convert.main import main

raise SystemExit(main())
