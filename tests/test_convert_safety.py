"""convert.py never destroys what it should not, and always ends with one clear line.

--force replaces only a model folder (never the user's files, never the current
directory); a bad source or a full disk keeps the old output; Ctrl-C at start-up exits
130 quietly; SIGTERM removes the partial staging folder; staging folders left by a
SIGKILL are removed by the next run.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import mlx_gen.convert.main as convert_module
import mlx_gen.convert.writer as writer_module
from mlx_gen.convert.main import convert, main
from mlx_gen.convert.writer import remove_stale_staging
from tests.checkpoints import llama_config, write_checkpoint

REPO = Path(__file__).resolve().parents[1]
# A driver that converts like convert.py but announces, then sleeps in, the write phase.
SLOW_WRITE = """
import sys, time
import mlx_gen.convert.main as m
real = m.write_config
def slow(folder, config):
    real(folder, config)
    print("WRITING", flush=True)
    time.sleep(120)
m.write_config = slow
sys.exit(m.main(sys.argv[1:]))
"""


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir())


@pytest.fixture
def src(tmp_path: Path) -> Path:
    write_checkpoint(tmp_path / "src", llama_config())
    return tmp_path / "src"


@pytest.fixture
def user_files(tmp_path: Path) -> Path:
    """A folder of someone's own files, not a model."""
    folder = tmp_path / "dst"
    (folder / "photos").mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    (folder / "config.json").write_text("{}")  # config.json alone is not a model
    return folder


def test_force_never_replaces_a_folder_that_is_not_a_model(src, user_files, capsys):
    before = snapshot(user_files)
    with pytest.raises(ValueError) as err:
        convert(src, user_files, force=True)
    assert "does not look like a model folder" in str(err.value)
    assert "it holds: config.json, notes.txt, photos/" in str(err.value)
    assert main(["--hf-path", str(src), "--mlx-path", str(user_files), "--force"]) == 2
    assert str(user_files) in one_error_line(capsys.readouterr().err)
    assert snapshot(user_files) == before and (user_files / "photos").is_dir()
    assert siblings(user_files) == ["dst", "src"]


@pytest.mark.parametrize("path", [".", "..", "sub/.."])
def test_current_directory_is_refused_before_anything_is_created(
    src, tmp_path, monkeypatch, capsys, path
):
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    write_checkpoint(work / "model", llama_config())  # makes "." look like a model
    monkeypatch.chdir(work)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["--hf-path", str(src), "--mlx-path", path, "--force"]) == 2
    assert "is the current directory or contains it" in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert sorted(p.name for p in work.iterdir()) == ["model", "sub"]


def test_bad_source_with_force_keeps_the_old_output(src, tmp_path, capsys):
    dst = tmp_path / "dst"
    convert(src, dst)
    before = snapshot(dst)
    write_checkpoint(tmp_path / "bad", llama_config())
    (tmp_path / "bad" / "config.json").write_text(json.dumps(llama_config(num_attention_heads=0)))
    assert main(["--hf-path", str(tmp_path / "bad"), "--mlx-path", str(dst), "--force"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "config.json: num_attention_heads=0 is invalid (expected an int in [1, " in line
    assert snapshot(dst) == before and siblings(dst) == ["bad", "dst", "src"]


def test_full_disk_is_one_error_and_keeps_the_old_output(src, tmp_path, monkeypatch, capsys):
    dst = tmp_path / "dst"
    convert(src, dst)
    before = snapshot(dst)

    def full(path, *args, **kwargs):  # What MLX raises when the disk is full.
        Path(path).write_bytes(b"partial")
        raise RuntimeError("[write] Unable to write 334556 bytes to file.")

    monkeypatch.setattr(writer_module.mx, "save_safetensors", full)
    assert main(["--hf-path", str(src), "--mlx-path", str(dst), "--force"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: writing {dst} failed (cannot write ")
    assert "Unable to write 334556 bytes" in line and line.endswith(
        "the existing folder is unchanged"
    )
    assert snapshot(dst) == before and siblings(dst) == ["dst", "src"]


def test_no_space_while_writing_a_json_file(src, tmp_path, monkeypatch, capsys):
    def no_space(folder, config):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "config.json"))

    monkeypatch.setattr(convert_module, "write_config", no_space)
    with pytest.raises(OSError) as err:
        convert(src, tmp_path / "dst")
    assert err.value.errno == errno.ENOSPC
    assert str(err.value) == (
        f"writing {tmp_path / 'dst'} failed (No space left on device); nothing was written"
    )
    assert siblings(tmp_path / "dst") == ["src"]


# Signals, in a subprocess


def start(args: list[str], *, script: str | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, *(["-c", script] if script else ["convert.py"]), *args]
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_ctrl_c_during_start_up_exits_130_without_a_traceback(src, tmp_path):
    proc = start(["--hf-path", str(src), "--mlx-path", str(tmp_path / "dst")])
    try:
        proc.wait(timeout=1.0)  # Importing MLX and transformers takes seconds.
        pytest.skip("the conversion finished before the signal was sent")
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip() == "interrupted"
    assert siblings(tmp_path / "dst") == ["src"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_while_writing_removes_the_staging_folder(src, tmp_path, sig):
    dst = tmp_path / "dst"
    proc = start(["--hf-path", str(src), "--mlx-path", str(dst)], script=SLOW_WRITE)
    try:
        assert proc.stdout.readline() == "WRITING\n"
        staging = [n for n in siblings(dst) if n.startswith(".dst.mlx-gen-")]
        assert len(staging) == 1 and (tmp_path / staging[0] / "model.safetensors").exists()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig and "Traceback" not in err
    assert siblings(dst) == ["src"]


def test_staging_left_by_sigkill_is_removed_by_the_next_run(src, tmp_path):
    dst = tmp_path / "dst"
    proc = start(["--hf-path", str(src), "--mlx-path", str(dst)], script=SLOW_WRITE)
    try:
        assert proc.stdout.readline() == "WRITING\n"
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    left = [n for n in siblings(dst) if n.startswith(f".dst.mlx-gen-{proc.pid}-")]
    assert len(left) == 1 and left[0].endswith(".tmp")
    convert(src, dst)
    assert siblings(dst) == ["dst", "src"] and (dst / "config.json").exists()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_our_staging_of_dead_runs_is_removed(tmp_path):
    dst, dead = tmp_path / "dst", dead_pid()
    names = {
        f".dst.mlx-gen-{dead}-0123abcd.tmp": True,  # ours, its run is gone
        f".dst.mlx-gen-{os.getpid()}-0123abcd.tmp": False,  # ours, still running
        f".dst.mlx-gen-{dead}-notours.tmp": False,  # not our name pattern
        f".other.mlx-gen-{dead}-0123abcd.tmp": False,  # another output's
        ".dst.0123abcd.tmp": False,  # no process id: cannot tell
    }
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_text("x")
    removed = remove_stale_staging(dst)
    assert [p.name for p in removed] == [n for n, gone in names.items() if gone]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        n for n, g in names.items() if not g
    )


def test_an_output_moved_aside_by_a_killed_swap_is_restored(tmp_path):
    dst = tmp_path / "dst"
    old = tmp_path / f".dst.mlx-gen-{dead_pid()}-0123abcd.old"
    (old / "dst").mkdir(parents=True)
    (old / "dst" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    remove_stale_staging(dst)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst"]
    assert json.loads((dst / "config.json").read_text()) == {"model_type": "llama"}
