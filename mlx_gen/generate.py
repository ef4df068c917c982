"""``python -m mlx_gen.generate``: the command line of :mod:`mlx_gen.cli.main`.

``mlx_gen`` never imports this module. If something does (``import mlx_gen.generate``),
Python rebinds the package attribute ``mlx_gen.generate`` from the function to this
module; the module is therefore made callable as that function, so
``mlx_gen.generate(model, ...)`` keeps working either way.
"""

import sys
import types

from mlx_gen.cli.main import main
from mlx_gen.generation import generate as _generate


class _CallableModule(types.ModuleType):
    """This module, callable as :func:`mlx_gen.generation.generate`."""

    __call__ = staticmethod(_generate)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    raise SystemExit(main())
