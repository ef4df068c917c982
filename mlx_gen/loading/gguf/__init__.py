"""GGUF files: ``header`` walks the metadata and tensor table, ``tensors`` packs each
tensor (with the block unpackers in ``quants/``) into MLX arrays, ``architectures`` holds
the per-architecture names and fix-ups as data, ``config`` turns the metadata into a
config.json, ``rope`` reads Llama 3's frequency tensor, ``reader`` assembles a checkpoint,
``tokenizer`` builds the tokenizer from the metadata. Part of ``loading``; imports mlx,
mlx-lm, numpy, gguf and ``loading`` modules only.
"""
