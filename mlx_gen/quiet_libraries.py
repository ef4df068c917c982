"""Library chatter off for the command line and the server, not for library users.

transformers logs warnings of its own on stderr ("Token indices sequence length is
longer than the specified maximum sequence length ...", printed before mlx_gen's own
``error:`` line about the same prompt), and libraries may raise Python warnings. A
command line promises one ``error:`` line, so its entry points run inside
:func:`quiet_libraries`; code that imports :mod:`mlx_gen` keeps its own logging and
warning settings.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

from transformers.utils import logging as transformers_logging


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Inside the block: transformers logs errors only and Python warnings are ignored.

    Both are restored when the block exits (``main()`` called in-process, as tests do,
    leaves the caller's settings as they were).

    >>> with quiet_libraries():
    ...     transformers_logging.get_verbosity() == transformers_logging.ERROR
    True
    """
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        transformers_logging.set_verbosity(verbosity)
