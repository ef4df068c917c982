"""Conversion to MLX folders (``python -m mlx_gen.convert``, ``convert.py``).

``main`` parses the flags and stages the write, ``quantize`` casts and quantizes, and
``writer`` writes weights, config, tokenizer and generation config. May import ``loading``.
"""
