"""Tensor-parallel generation: 2 ranks over the ring backend on 127.0.0.1 equal one process.

One launch of ``tests/distributed_worker.py`` runs every control on stories260K (when
present) and on random tiny Llama and Qwen2 checkpoints; each rank writes its results,
which are compared across ranks (exactly) and with the same calls in this process.
Other launches check the command line and that a failing rank ends the run.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from safetensors.numpy import load_file

import mlx_gen as mg
from mlx_gen.cli.launch import failure_line
from mlx_gen.loading.distributed import agreed_seed, shard_model, tensor_parallel_types
from tests.checkpoints import llama_config, write_checkpoint
from tests.conftest import STORIES
from tests.distributed_worker import PROMPT, run_checks

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "distributed_worker.py"
TIMEOUT = 240  # seconds for one launch; a hang fails the test instead of the suite
SHAPE = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 4}


def _free_port() -> int:
    """A port ``p`` with ``p`` and ``p + 1`` free on 127.0.0.1 (one per rank)."""
    for _ in range(50):
        port = random.randrange(20000, 60000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair found")


def launch(command: list[str], *, timeout: int = TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run ``command`` on 2 ranks with ``python -m mlx_gen.cli.launch`` (ring, localhost)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    launcher = [sys.executable, "-m", "mlx_gen.cli.launch", "-n", "2", "--backend", "ring"]
    return subprocess.run(
        [*launcher, "-p", str(_free_port()), "--", sys.executable, *command],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("dist")
    out = {}
    if (STORIES / "config.json").exists():
        out["stories"] = str(STORIES)
    for kind, arch in [("llama", "LlamaForCausalLM"), ("qwen2", "Qwen2ForCausalLM")]:
        config = llama_config(
            model_type=kind, architectures=[arch], tie_word_embeddings=True, eos_token_id=2, **SHAPE
        )
        write_checkpoint(root / kind, config)
        out[kind] = str(root / kind)
    return out


@pytest.fixture(scope="module")
def ranks(models: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Each rank's results of one 2-rank launch of the worker."""
    out = tmp_path_factory.mktemp("ranks")
    spec = out / "spec.json"
    spec.write_text(json.dumps({"models": models}))
    proc = launch([str(WORKER), str(spec), str(out)])
    assert proc.returncode == 0, proc.stderr
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.fixture(scope="module")
def single(models: dict[str, str]) -> dict[str, Any]:
    """The same calls in this one process (the whole model)."""
    return run_checks(models)


def test_ranks_are_sharded_and_agree_exactly(ranks: list[dict], models: dict[str, str]) -> None:
    for name in models:
        r0, r1 = ranks[0][name], ranks[1][name]
        assert (r0["rank"], r1["rank"], r0["size"], r1["size"]) == (0, 1, 2, 2)
        # Tokens, text, and every logprob bit for bit (unseeded sampling included): a rank
        # that diverged anywhere would fail here.
        assert r0["runs"] == r1["runs"], name


def test_equal_to_single_process(ranks: list[dict], single: dict[str, Any]) -> None:
    for name, ref in single.items():
        for run, expected in ref["runs"].items():
            if run == "unseeded":
                continue
            got = ranks[0][name]["runs"][run]
            where = f"{name}/{run}"
            assert got["tokens"] == expected["tokens"], where
            assert (got["text"], got["finish_reason"]) == (
                expected["text"],
                expected["finish_reason"],
            ), where
            assert len(got["logprobs"]) == len(expected["logprobs"]), where
            for step_got, step_ref in zip(got["logprobs"], expected["logprobs"], strict=True):
                assert step_got.keys() == step_ref.keys(), where
                for mode in step_ref:
                    a, b = step_got[mode], step_ref[mode]
                    assert (a["token"], a["rank"]) == (b["token"], b["rank"]), where
                    assert [t[0] for t in a["top"]] == [t[0] for t in b["top"]], where
                    values = [a["logprob"], *(t[1] for t in a["top"])]
                    reference = [b["logprob"], *(t[1] for t in b["top"])]
                    np.testing.assert_allclose(values, reference, atol=1e-4, err_msg=where)


def test_the_controls_took_effect(single: dict[str, Any]) -> None:
    """The compared runs really exercise each control (else equality proves little)."""
    for name, ref in single.items():
        runs = ref["runs"]
        greedy, controls = runs["greedy"]["tokens"], runs["controls"]["tokens"]
        assert controls[0] != greedy[0], name  # begin-suppressed
        assert not {7, 9, 10} & set(controls), name  # banned / suppressed
        steps = runs["controls"]["logprobs"]
        assert any(s["raw"]["logprob"] != s["processed"]["logprob"] for s in steps), name
        min_new = runs["min_new_tokens"]
        assert (min_new["finish_reason"], len(min_new["tokens"])) == ("stop", 6), name
        assert runs["stop"]["finish_reason"] == "stop_string", name
        assert len(runs["sampled"]["logprobs"][0]["processed"]["top"]) == 3, name
        # Speculation (plain and under a constraint) gives the greedy tokens it verifies.
        assert runs["prompt_lookup"]["tokens"] == greedy, name
        assert runs["constraint_lookup"]["tokens"] == runs["constraint"]["tokens"], name
        steps = runs["penalties"]["logprobs"]  # the penalties acted on the logits
        assert any(s["raw"]["logprob"] != s["processed"]["logprob"] for s in steps), name


def test_unseeded_calls_agree_across_ranks_though_each_draw_differs(
    ranks: list[dict], models: dict[str, str]
) -> None:
    # Two unseeded draws in one process differ, so ranks drawing their own seeds would
    # diverge; the launch above showed them equal (rank 0's seed is shared).
    model = mg.load(models["llama"])
    settings = mg.GenerationSettings(max_tokens=16, temperature=3.0, ignore_eos=True)
    draws = {tuple(mg.generate(model, PROMPT, settings=settings).token_ids) for _ in range(2)}
    assert len(draws) == 2
    for name in models:
        assert ranks[0][name]["runs"]["unseeded"] == ranks[1][name]["runs"]["unseeded"]


def _expected_rank_bytes(folder: str) -> tuple[int, int]:
    """(whole model bytes, one of 2 ranks' bytes): q/k/v/o and MLP tensors split in two."""
    weights = {}
    for path in Path(folder).glob("*.safetensors"):
        weights.update(load_file(str(path)))
    whole = sum(w.nbytes for w in weights.values())
    split = sum(w.nbytes for k, w in weights.items() if "_proj." in k and ".layers." in k)
    return whole, whole - split // 2


def test_each_rank_holds_half_the_layers(
    ranks: list[dict], models: dict[str, str], single: dict[str, Any]
) -> None:
    for name, folder in models.items():
        whole, per_rank = _expected_rank_bytes(folder)
        assert single[name]["parameter_bytes"] == whole
        for r in ranks:
            assert r[name]["parameter_bytes"] == per_rank, name
            assert per_rank < 0.6 * whole  # embeddings and norms stay whole on each rank
            # Nothing else resident, and the whole model was never in memory at once.
            assert r[name]["active_bytes"] < per_rank * 1.25, name
            assert r[name]["peak_bytes"] < whole, name


def _cli_json(stdout: str) -> dict[str, Any]:
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, stdout  # one JSON document: rank 0's
    doc = json.loads(lines[0])
    doc.pop("timings", None)  # wall-clock, differs run to run
    doc.pop("peak_memory_gb", None)  # per process: lower on each rank
    return doc


def test_cli_under_launch_prints_once_and_equals_one_process(models: dict[str, str]) -> None:
    args = [
        "-m",
        "mlx_gen.generate",
        "--model",
        models["llama"],
        "--prompt",
        PROMPT,
        "--max-tokens",
        "8",
        "--temp",
        "0.8",
        "--seed",
        "3",
        "--logprobs",
        "2",
        "--logprobs-mode",
        "both",
        "--logit-bias",
        "5:2",
        "--json",
    ]
    proc = launch(args)
    assert proc.returncode == 0, proc.stderr
    alone = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT
    )
    assert alone.returncode == 0, alone.stderr
    got, expected = _cli_json(proc.stdout), _cli_json(alone.stdout)
    _assert_close(got, expected)
    assert len(got["token_ids"]) == 8 and got["logprobs"][0]["processed"]["top"]


def _assert_close(got: Any, expected: Any, where: str = "") -> None:
    """Equal JSON documents, floats (logprobs, probabilities) to within 1e-4."""
    if isinstance(expected, float):
        assert abs(got - expected) <= 1e-4, where
    elif isinstance(expected, dict):
        assert got.keys() == expected.keys(), where
        for k in expected:
            _assert_close(got[k], expected[k], f"{where}.{k}")
    elif isinstance(expected, list):
        assert len(got) == len(expected), where
        for i, (a, b) in enumerate(zip(got, expected, strict=True)):
            _assert_close(a, b, f"{where}[{i}]")
    else:
        assert got == expected, where


def test_cli_usage_error_is_reported_once(models: dict[str, str]) -> None:
    proc = launch(["-m", "mlx_gen.generate", "--model", models["llama"], "--top-p", "2"])
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--top-p" in errors[0], proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize(
    ("fail", "status", "message"),
    [
        ("start", 1, "rank 1 exited with status 1"),
        ("generate", 137, "rank 1 was killed by signal 9"),
    ],
)
def test_a_failing_rank_ends_the_run(
    fail: str, status: int, message: str, models: dict[str, str], tmp_path: Path
) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"models": {"llama": models["llama"]}, "fail": fail}))
    proc = launch([str(WORKER), str(spec), str(tmp_path)], timeout=120)
    assert proc.returncode == status, proc.stderr
    assert f"mlx-gen-launch: {message}; the other ranks were stopped" in proc.stderr
    assert not (tmp_path / "rank0.json").exists()


def test_failure_line_names_the_cause_not_the_stopped_ranks() -> None:
    assert failure_line([(0, 0), (1, 0)]) is None
    assert failure_line([(1, -15), (0, 2)]) == (
        "mlx-gen-launch: rank 0 exited with status 2; the other ranks were stopped",
        2,
    )
    assert failure_line([(1, -9), (0, -15)]) == (
        "mlx-gen-launch: rank 1 was killed by signal 9; the other ranks were stopped",
        137,
    )


class _Group:
    """A stand-in for a group of ``n`` ranks, for the checks made before any collective."""

    def __init__(self, n: int) -> None:
        self.n = n

    def size(self) -> int:
        return self.n

    def rank(self) -> int:
        return 0


def test_a_model_without_shard_names_the_supported_ones() -> None:
    with pytest.raises(ValueError, match="'gemma' has no tensor-parallel") as err:
        shard_model(nn.Linear(2, 2), _Group(2), config={"model_type": "gemma"}, source="m")
    assert "llama" in str(err.value) and "qwen2" in str(err.value)
    assert {"llama", "qwen2", "mistral"} <= set(tensor_parallel_types())


def test_heads_that_do_not_divide_are_refused(models: dict[str, str]) -> None:
    model = mg.load(models["llama"], distributed=False)
    with pytest.raises(ValueError, match="num_attention_heads=4 cannot be split across 3 ranks"):
        shard_model(model.model, _Group(3), config=model.config, source="m")


def test_not_launched_loads_whole_and_seeds_freely(models: dict[str, str]) -> None:
    model = mg.load(models["llama"], distributed=True)  # a group of one: nothing to shard
    assert model.group is None and model.rank == 0
    seeds = {agreed_seed(None) for _ in range(4)}
    assert len(seeds) > 1 and all(0 <= s < 2**32 for s in seeds)
    mx.eval(model.model.parameters())
