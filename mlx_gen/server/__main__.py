"""``python -m mlx_gen.server``."""

from mlx_gen.server.main import main

if __name__ == "__main__":
    raise SystemExit(main())
