"""A model with several EOS ids: each one alone stops generation.

Checkpoints list EOS ids in up to three places: ``config.json``, ``generation_config.json``
and the tokenizer. Llama 3.1, for one, ends turns with any of three ids. ``mg.load``
takes the *union*, in that order, and records which files named each id
(``generation_config.eos_sources``); any generated id in the set stops generation.

Pitfalls this demonstrates: mlx-examples honoured only the last of Llama 3.1's
``[128001, 128008, 128009]`` (mlx-examples#1139); mlx-lm 0.32.2 lets
``generation_config.json`` *replace* ``config.json``'s list (here it would drop the id
that only ``config.json`` names) and skips an EOS id of 0; llama.cpp keeps a single EOS
(llama.cpp#9606).

To get such a model offline, the embedded SmolLM2 is converted into a temporary folder
(quantization kept) and its two JSON files are edited: ``config.json`` lists 2 and the
id of ``"."``, ``generation_config.json`` lists 2 and the id of ``" Paris"``.

Run: ``python examples/multi_eos.py`` (about 20 s on a CPU).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlx_gen as mg
from mlx_gen.convert.main import convert

QUESTION = "What is the capital of France? Answer in one sentence."


def edit_json(path: Path, **changes: object) -> None:
    """Set keys of a JSON file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def make_multi_eos_model(folder: Path) -> mg.LoadedModel:
    """Convert the embedded model into ``folder`` and give it three EOS ids in two files."""
    convert(None, folder)  # None: the embedded SmolLM2; no -q, so it stays 4-bit and fast
    base = mg.load(folder)
    period, paris = (base.tokenizer.encode(t, add_special_tokens=False)[0] for t in (".", " Paris"))
    edit_json(folder / "config.json", eos_token_id=[2, period])
    edit_json(folder / "generation_config.json", eos_token_id=[2, paris])
    return mg.load(folder)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model = make_multi_eos_model(Path(tmp) / "smollm2-multi-eos")
        config = model.generation_config
        print("resolved EOS ids, and the files that named each:")
        for i in config.eos_token_ids:
            token = repr(model.tokenizer.decode([i]))
            print(f"  {i:>5} {token:>12}  from {', '.join(config.eos_sources[i])}")
        messages = [{"role": "user", "content": QUESTION}]
        cache = mg.PromptCache(model.model)
        print("\neach id alone (GenerationSettings(eos_token_ids=[id])):")
        for i in config.eos_token_ids:
            settings = mg.GenerationSettings(max_tokens=20, eos_token_ids=[i])
            result = mg.generate(model, messages=messages, settings=settings, prompt_cache=cache)
            print(
                f"  eos {i:>5}: {result.text!r:<36} finish={result.finish_reason}, "
                f"matched={result.matched}, {len(result.token_ids)} tokens"
            )
        result = mg.generate(
            model,
            messages=messages,
            prompt_cache=cache,
            settings=mg.GenerationSettings(max_tokens=20),
        )
        print(
            f"\nthe model's own set: {result.text!r}, stopped by id {result.matched} "
            f"(the first of the three to be generated)"
        )


if __name__ == "__main__":
    main()
