"""Convert a checkpoint to an MLX folder: ``python convert.py --hf-path SRC --mlx-path DST``."""

import sys

try:  # Importing MLX and transformers takes seconds: Ctrl-C then exits quietly too.
    from mlx_gen.convert.main import main
except KeyboardInterrupt:
    sys.stderr.write("interrupted\n")
    raise SystemExit(130) from None

raise SystemExit(main())
