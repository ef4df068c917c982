"""ggml quantized block formats → MLX affine codes: one small unpacker per type family
(``legacy``: Q4_0…Q8_0, ``kquants``: Q2_K…Q6_K, ``nonlinear``: IQ4_NL/IQ4_XS) and the
MLX bit packing (``codes``). Pure numpy; imports nothing from mlx_gen outside this folder.
"""

from mlx_gen.loading.gguf.quants.codes import Codes, Unpacker, pack_bits
from mlx_gen.loading.gguf.quants.kquants import KQUANTS
from mlx_gen.loading.gguf.quants.legacy import LEGACY
from mlx_gen.loading.gguf.quants.nonlinear import NONLINEAR

# ggml type name -> its unpacker, for every quantized type mlx_gen loads.
UNPACKERS: dict[str, Unpacker] = {**LEGACY, **KQUANTS, **NONLINEAR}

__all__ = ["UNPACKERS", "Codes", "Unpacker", "pack_bits"]
