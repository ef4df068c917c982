"""One engine path: ``/v1/messages``, ``/v1/responses`` and ``/v1/chat/completions``
return the same tokens for the same model, prompt, settings and seed (and those of
``mlx_gen.generate``), greedy and sampled."""

from __future__ import annotations

import anthropic
import openai
import pytest

import mlx_gen as mg
from tests.checkpoints import llama_config, write_checkpoint
from tests.serving import running_server

SYSTEM, TEXT = "answer", "tell me a story"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("equality") / "llama"
    write_checkpoint(
        folder,
        llama_config(eos_token_id=2),
        generation_config={"eos_token_id": [3, 2], "bos_token_id": 1},
    )
    return mg.load(folder)


@pytest.mark.parametrize(
    "controls",
    [
        {"temperature": 0.0},
        {"temperature": 1.0, "seed": 5},
        {"temperature": 0.8, "top_p": 0.9, "seed": 123, "top_k": 40, "repetition_penalty": 1.2},
    ],
)
def test_three_surfaces_same_tokens(model, controls):
    settings = mg.GenerationSettings(max_tokens=20, **controls)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": TEXT}]
    want = mg.generate(model, messages=messages, settings=settings)
    sampling = {k: v for k, v in controls.items() if k in ("temperature", "top_p", "seed")}
    extra = {k: v for k, v in controls.items() if k not in sampling}
    with running_server(model, max_batch_size=4) as url:
        chat = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        c = chat.chat.completions.create(
            model="test", messages=messages, max_tokens=20, **sampling,
            extra_body={**extra, "return_token_ids": True},
        )  # fmt: skip
        r = chat.responses.create(
            model="test", instructions=SYSTEM, input=TEXT, max_output_tokens=20,
            temperature=controls["temperature"], top_p=controls.get("top_p"),
            extra_body={**extra, "return_token_ids": True,
                        **({"seed": controls["seed"]} if "seed" in controls else {})},
        )  # fmt: skip
        a = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0).messages.create(
            model="test", system=SYSTEM, messages=messages[1:], max_tokens=20,
            extra_body={**controls, "return_token_ids": True},
        )  # fmt: skip
    ids = c.choices[0].model_extra["token_ids"]
    assert ids == want.token_ids
    assert r.model_extra["token_ids"] == ids == a.model_extra["token_ids"]
    assert c.choices[0].message.content == r.output_text == a.content[0].text == want.text
