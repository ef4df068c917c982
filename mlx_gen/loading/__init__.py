"""Loading checkpoints: sources, folders, GGUF files, tokenizers and generation settings.

``loader`` is the entry (``load``); ``sources`` resolves paths and Hub ids, ``checkpoint``
reads folders, ``gguf/`` GGUF files, ``architecture`` builds mlx-lm models (``subblock``:
the 16-element-group quantized layers GGUF's Q6_K/Q2_K need; ``dequantize``: dense
float32 replacements for quantized layers), ``generation_config`` merges every EOS id and
default, and ``distributed`` shards a model over ``mx.distributed`` (tensor parallel).
Named ``loading`` so that it never shadows the public function ``mlx_gen.load``. May
import only mlx, mlx-lm and libraries.
"""
