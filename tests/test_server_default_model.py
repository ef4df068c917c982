"""The README's server call on the embedded SmolLM2 (a real byte-level BPE tokenizer)."""

from __future__ import annotations

import numpy as np
import openai
import pytest

import mlx_gen as mg
from mlx_gen.loading.default_model import default_model_path
from mlx_gen.server.main import served_name
from tests.serving import running_server

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


@pytest.mark.slow
def test_readme_call_on_the_embedded_model():
    try:
        default_model_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    model = mg.load()
    name = served_name(None, model)
    assert name == "SmolLM2-135M-Instruct.Q4_1"  # the name the README uses
    ref = mg.generate(
        model, messages=QUESTION, settings=mg.GenerationSettings(max_tokens=12, logprobs=3)
    )
    with running_server(model, name=name) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        r = client.chat.completions.create(
            model=name, messages=QUESTION, max_tokens=12, logprobs=True, top_logprobs=3
        )
    choice = r.choices[0]
    assert choice.message.content == ref.text == "The capital of France is Paris."
    assert (choice.finish_reason, choice.model_extra["stop_reason"]) == ("stop", 2)
    entries = choice.logprobs.content
    # Each token's bytes are its own; together they spell the answer (EOS renders nothing).
    assert b"".join(bytes(e.bytes) for e in entries[:-1]).decode() == ref.text
    np.testing.assert_allclose(
        [e.logprob for e in entries], [lp["raw"].logprob for lp in ref.logprobs], atol=1e-4
    )
