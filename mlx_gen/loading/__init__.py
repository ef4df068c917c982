"""Loading checkpoints: sources, folders, GGUF files, tokenizers and generation settings.

``loader`` is the entry (``load``); ``sources`` resolves paths and Hub ids, ``checkpoint``
reads folders, ``gguf/`` GGUF files, ``architecture`` builds mlx-lm models, and
``generation_config`` merges every EOS id and default; ``distributed`` shards a model
over ``mx.distributed`` (tensor parallel, one rank per process). Named ``loading`` so
that it never shadows the public function ``mlx_gen.load``. May import only mlx, mlx-lm
and libraries.
"""
