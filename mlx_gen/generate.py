"""``python -m mlx_gen.generate``: the command line of :mod:`mlx_gen.cli`.

This module is a shim; ``mlx_gen`` never imports it, so the function
``mlx_gen.generate`` (from :mod:`mlx_gen.generation`) is not shadowed.
"""

from mlx_gen.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
