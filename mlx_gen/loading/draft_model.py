"""Loading a draft model for speculative decoding (``--draft-model``, the server's flag).

A draft model must share the target's vocabulary (the verifier compares token ids), and
its weights are evaluated here, on the loading thread: a thread that drafts later (the
server's worker) must see no lazy weights.
"""

from __future__ import annotations

import mlx.core as mx

from mlx_gen.loading.loader import LoadedModel, load


def load_draft_model(source: str, model: LoadedModel, *, dtype: str | None = None) -> LoadedModel:
    """Load ``source`` as a draft model for ``model`` (same vocabulary, weights evaluated).

    Raises:
        ValueError: It does not load (the loader's message), or its vocabulary size
            differs from ``model``'s.
    """
    try:
        draft = load(source, dtype=dtype)
    except OSError as err:
        raise ValueError(str(err)) from err
    if draft.vocab_size != model.vocab_size:
        raise ValueError(
            f"{source} has vocabulary size {draft.vocab_size}; the model's is "
            f"{model.vocab_size} (they must be equal)"
        )
    # Evaluated here: a thread that drafts later (the server's worker) sees no lazy weights.
    mx.eval(draft.model(mx.array([[0]], dtype=mx.int32)))
    return draft
