"""Prompt-lookup speculation on 2 ranks (ring, 127.0.0.1) answers as one process does.

stories260K served by ``mlx-gen-launch -n 2 -- python -m mlx_gen.server --prompt-lookup 4``
and by the same app in this process with the same drafter (``measure_cost=False``, as the
ranks draft): rewrite-style prompts where lookup finds drafts, each alone (so it really
drafts: ``/metrics`` counts the drafted tokens on rank 0), greedy and seeded sampling,
then greedy ones concurrently, must get the same answers; greedy ones the tokens of
speculation off too. A draft model is refused by name (a request: 400; the flag: one
``error:`` line and exit status 2). No rank is left running.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

import mlx_gen as mg
from mlx_gen.prefix_cache import PrefixCache
from mlx_gen.server.speculation import ServerSpeculation
from tests.conftest import STORIES
from tests.dist_server import ROOT, rank_pids, same, two_ranks
from tests.serving import free_port, running_server
from tests.test_distributed import _free_port
from tests.test_server_metrics import delta, scrape

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (STORIES / "config.json").exists(), reason=f"{STORIES} is absent"),
]
DRAFTED = "mlx_gen_spec_draft_tokens_total"
ACCEPTED = "mlx_gen_spec_accepted_tokens_total"
STORY = (
    "Once upon a time, there was a little girl named Lily. She liked to play in the park. "
    "One day, she saw a big, red ball. She wanted to play with it, but it was too high."
)
# The story, then the start of its rewrite: the continuation copies some of it.
REWRITE = [f"Rewrite the story.\n{STORY}\nRewritten:\n{STORY[:k]}" for k in (29, 66, 120)]
LOOKUP = {"prompt_lookup": 4}


def body(prompt: str, *, seed: int | None = None, **fields: Any) -> dict[str, Any]:
    """A completion of ``prompt``: greedy with logprobs, or sampled with ``seed``."""
    out = {"model": str(STORIES), "prompt": prompt, "max_tokens": 40, "return_token_ids": True}
    if seed is None:
        return {**out, "temperature": 0.0, "logprobs": 2, **fields}
    return {**out, "temperature": 0.8, "seed": seed, **fields}


def complete(url: str, request: dict[str, Any]) -> list[dict[str, Any]]:
    r = httpx.post(f"{url}/v1/completions", json=request, timeout=180)
    assert r.status_code == 200, r.text
    return r.json()["choices"]


def alone(url: str, bodies: list[dict[str, Any]]) -> tuple[list[Any], float, float]:
    """Each answer in turn (each request decodes alone, so it drafts), and how many tokens
    were drafted and accepted meanwhile (``/metrics``)."""
    before = scrape(url)
    answers = [complete(url, b) for b in bodies]
    after = scrape(url)
    return answers, delta(before, after, DRAFTED), delta(before, after, ACCEPTED)


def together(url: str, bodies: list[dict[str, Any]]) -> list[Any]:
    with ThreadPoolExecutor(len(bodies)) as pool:  # concurrent: they share batches
        return list(pool.map(lambda b: complete(url, b), bodies))


def run(url: str) -> tuple[list[Any], float, float, list[Any]]:
    solo, drafted, accepted = alone(url, SOLO)
    return solo, drafted, accepted, together(url, TOGETHER)


SOLO = [
    body(REWRITE[0], speculative=LOOKUP),
    body(REWRITE[1], seed=7, speculative=LOOKUP),
    body(REWRITE[2]),  # the server's default: --prompt-lookup 4
    body(REWRITE[2], seed=11, speculative={"prompt_lookup": 2}),
]
TOGETHER = [
    body(REWRITE[0], speculative=LOOKUP),
    body(REWRITE[1], speculative=LOOKUP, stop=["ball"]),
    body(REWRITE[2], speculative=LOOKUP),
    body(STORY, speculative=False),
]
GREEDY = [0, 2]  # the SOLO answers that speculation off must reproduce token for token


def test_prompt_lookup_on_two_ranks_answers_as_one_process() -> None:
    folder = str(STORIES)
    with two_ranks(folder, "--prompt-lookup", "4") as launch:
        ranked = run(launch.url)
        refused = httpx.post(
            f"{launch.url}/v1/completions", json=body("Hi", speculative={"draft": 2}), timeout=60
        )
        port = launch.port
    assert rank_pids(port) == []  # no rank left running
    assert refused.status_code == 400
    message = refused.json()["error"]["message"]
    assert "each rank would run its own draft model" in message, message
    assert refused.json()["error"]["param"] == "speculative"
    model = mg.load(folder)
    lookup = mg.PromptLookup(num_draft=4, measure_cost=False)  # as --prompt-lookup 4 on ranks
    speculation = ServerSpeculation(default=lookup, measure_cost=False)
    options = {"name": folder, "prefix_cache": PrefixCache(model)}
    with running_server(model, speculation=speculation, **options) as url:
        single = run(url)
    with running_server(model, prefix_cache=PrefixCache(model), name=folder) as url:
        off = [complete(url, {**SOLO[i], "speculative": False}) for i in GREEDY]
    same(ranked[0], single[0], "alone")
    same(ranked[3], single[3], "together")
    assert ranked[1] > 0 and ranked[2] > 0  # rank 0 counted drafts, and some were kept
    assert (ranked[1], ranked[2]) == (single[1], single[2])  # the same rounds as one process
    for i, plain in zip(GREEDY, off, strict=True):
        assert ranked[0][i][0]["token_ids"] == plain[0]["token_ids"], SOLO[i]
        assert ranked[0][i][0]["text"] == plain[0]["text"]
    assert ranked[3][0][0]["token_ids"] == ranked[0][0][0]["token_ids"]  # greedy: batch or not
    assert ranked[3][1][0]["finish_reason"] == "stop"


def test_a_draft_model_flag_under_ranks_is_one_error_line_and_status_2() -> None:
    port = free_port()
    launcher = [sys.executable, "-m", "mlx_gen.cli.launch", "-n", "2", "--backend", "ring"]
    server = [sys.executable, "-m", "mlx_gen.server", "--model", str(STORIES)]
    command = [*launcher, "-p", str(_free_port()), "--", *server, "--port", str(port)]
    proc = subprocess.run(
        [*command, "--draft-model", str(STORIES)], capture_output=True, text=True, timeout=120,
        cwd=ROOT, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: --draft-model: the distributed server drafts with prompt lookup only (each "
        "rank would run its own draft model; not supported yet)"
    ], proc.stderr
    assert rank_pids(port) == []
