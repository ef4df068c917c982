"""A model folder never runs code: sandboxed chat templates, no remote code, no prompts.

Each attack is a copy of stories260K (vocab 512) with one file changed; it must leave
no marker file, print no prompt on stdout, and fail with one error naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import mlx_gen as mg
from mlx_gen.convert.main import convert
from mlx_gen.loading.chat_template import render_chat_template
from tests.conftest import STORIES
from tests.test_gguf import byte_level_metadata, tiny_config, write_model

REPO = Path(__file__).resolve().parents[1]
CHAT = [{"role": "user", "content": "Once"}]


def evil_template(marker: Path) -> str:
    """The issue's reproduction: reach ``os.system`` through Jinja's ``cycler`` global."""
    return (
        f"{{{{ cycler.__init__.__globals__.os.system('touch {marker}') }}}}"
        "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )


def copy_stories(dst: Path, *, sentencepiece_only: bool = False) -> Path:
    """A writable copy of stories260K; ``sentencepiece_only`` drops ``tokenizer.json``."""
    if not (STORIES / "config.json").exists():
        pytest.skip(f"{STORIES} is absent")
    shutil.copytree(STORIES, dst)
    for path in [dst, *dst.iterdir()]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    if sentencepiece_only:
        (dst / "tokenizer.json").unlink()
    return dst


def edit_json(path: Path, **values) -> None:
    data = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**data, **values}))


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "mlx_gen.generate", *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=180, env=env)


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# A. Chat templates render in a sandbox


def test_evil_template_through_the_cli_runs_nothing(tmp_path):
    model = copy_stories(tmp_path / "m", sentencepiece_only=True)
    marker = tmp_path / "PWNED"
    edit_json(model / "tokenizer_config.json", chat_template=evil_template(marker))
    done = run_cli("--model", str(model), "--chat", "--prompt", "Once", "--max-tokens", "3")
    assert not marker.exists()
    assert done.returncode == 2 and done.stdout == ""
    line = one_error_line(done.stderr)
    assert (
        f"{model / 'tokenizer_config.json'}: the chat template was blocked by the sandbox" in line
    )


@pytest.mark.parametrize("layout", ["tokenizer.json", "sentencepiece only", "chat_template.jinja"])
def test_evil_template_through_generate_runs_nothing(tmp_path, layout):
    model = copy_stories(tmp_path / "m", sentencepiece_only=layout == "sentencepiece only")
    marker = tmp_path / "PWNED"
    template_file = layout if layout == "chat_template.jinja" else "tokenizer_config.json"
    if layout == "chat_template.jinja":
        (model / layout).write_text(evil_template(marker))
    else:
        edit_json(model / template_file, chat_template=evil_template(marker))
    loaded = mg.load(model)
    with pytest.raises(ValueError) as err:
        mg.generate(loaded, messages=CHAT, settings=mg.GenerationSettings(max_tokens=3))
    assert str(err.value).startswith(f"{model / template_file}: the chat template was blocked")
    assert not marker.exists()


def test_template_survives_conversion_and_stays_sandboxed(tmp_path):
    model = copy_stories(tmp_path / "m", sentencepiece_only=True)
    marker = tmp_path / "PWNED"
    edit_json(model / "tokenizer_config.json", chat_template=evil_template(marker))
    convert(model, tmp_path / "out")  # Conversion copies the template; it never renders it.
    saved = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert saved["chat_template"] == evil_template(marker)
    with pytest.raises(ValueError, match="the chat template was blocked by the sandbox"):
        mg.generate(mg.load(tmp_path / "out"), messages=CHAT)
    done = run_cli("--model", str(tmp_path / "out"), "--chat", "--prompt", "Once")
    assert done.returncode == 2 and "blocked by the sandbox" in one_error_line(done.stderr)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{% for m in messages %}{{ m['content'] }", "the chat template does not parse (line 1"),
        ("{{ raise_exception('roles must alternate') }}", "chat template failed: roles must alt"),
        ("{{ messages.__class__.__mro__ }}", "the chat template was blocked by the sandbox"),
        ("{{ messages.append(1) }}", "the chat template was blocked by the sandbox"),
        ("{{ 1 / 0 }}", "the chat template failed (ZeroDivisionError: division by zero)"),
        ("{{ range(10**9) | length }}", "failed (OverflowError: Range too big."),
        ("{{ 'a' + 1 }}", "the chat template failed (TypeError: "),
    ],
)
@pytest.mark.parametrize("sentencepiece_only", [False, True])
def test_a_broken_or_blocked_template_is_one_value_error(
    tmp_path, template, expected, sentencepiece_only
):
    model = copy_stories(tmp_path / "m", sentencepiece_only=sentencepiece_only)
    edit_json(model / "tokenizer_config.json", chat_template=template)
    with pytest.raises(ValueError) as err:
        mg.load(model).tokenizer.apply_chat_template(CHAT, add_generation_prompt=True)
    assert str(err.value).startswith(f"{model / 'tokenizer_config.json'}: ")
    assert expected in str(err.value)


@pytest.mark.parametrize(
    "template",
    [
        '{{ ("{0.__class__.__mro__}"|attr("format"))(messages) }}',
        '{% set f = "{0.__class__.__mro__}".format %}{{ f(messages) }}',
        '{{ "{0.__class__.__mro__}".format(messages) }}',
    ],
)
def test_str_format_cannot_reach_python_internals(template):
    # str.format reads attributes itself; the sandbox must check its fields too.
    with pytest.raises(ValueError, match=r"^t: the chat template was blocked by the sandbox"):
        render_chat_template(template, CHAT, source="t")


def test_sandboxed_template_renders_what_transformers_renders(tmp_path):
    template = (
        "{{ bos_token }}{% for m in messages %}{% if m.role == 'skip' %}{% continue %}{% endif %}"
        "[{{ m.role | upper }}] {{ m.content | tojson }}\n{% endfor %}"
        "{% if add_generation_prompt %}[ASSISTANT]{% endif %}"
    )
    chat = [*CHAT, {"role": "skip", "content": "x"}, {"role": "user", "content": "é<b>"}]
    hf = copy_stories(tmp_path / "hf")
    edit_json(hf / "tokenizer_config.json", chat_template=template)
    expected = mg.load(hf).tokenizer.apply_chat_template(chat, add_generation_prompt=True)
    assert mg.load(hf).tokenizer.decode(expected).endswith('[USER] "é<b>"\n[ASSISTANT]')
    spm = copy_stories(tmp_path / "spm", sentencepiece_only=True)
    edit_json(spm / "tokenizer_config.json", chat_template=template)
    text = mg.load(spm).tokenizer.apply_chat_template(
        chat, add_generation_prompt=True, tokenize=False
    )
    assert text == '<s>[USER] "Once"\n[USER] "é<b>"\n[ASSISTANT]'
    variables = {"bos_token": "<s>"}
    rendered = render_chat_template(
        template, chat, source="t", add_generation_prompt=True, variables=variables
    )
    assert rendered == text


def test_template_list_picks_default_and_a_bad_value_is_named(tmp_path):
    model = copy_stories(tmp_path / "m", sentencepiece_only=True)
    entries = [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]
    edit_json(model / "tokenizer_config.json", chat_template=entries)
    assert mg.load(model).tokenizer.apply_chat_template(CHAT, tokenize=False) == "D"
    edit_json(model / "tokenizer_config.json", chat_template=42)
    with pytest.raises(ValueError, match=r"tokenizer_config.json: chat_template=.*invalid"):
        mg.load(model)


# A.2 No remote code, no prompt on stdin/stdout


def write_evil_code(model: Path, marker: Path) -> None:
    (model / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import PreTrainedTokenizerFast, LlamaConfig\n"
        "class EvilTok(PreTrainedTokenizerFast):\n    pass\n"
        "class EvilConfig(LlamaConfig):\n    model_type = 'evil'\n"
    )


def test_auto_map_tokenizer_is_refused_without_prompting(tmp_path):
    model = copy_stories(tmp_path / "m")
    marker = tmp_path / "RAN"
    write_evil_code(model, marker)
    edit_json(
        model / "tokenizer_config.json",
        tokenizer_class="EvilTok",
        auto_map={"AutoTokenizer": ["evil.EvilTok", "evil.EvilTok"]},
    )
    done = run_cli("--model", str(model), "--prompt-file", "-", "--max-tokens", "3", stdin="y\n")
    assert not marker.exists()
    assert done.returncode == 2 and done.stdout == ""
    line = one_error_line(done.stderr)
    assert f"{model / 'tokenizer_config.json'}: auto_map.AutoTokenizer=" in line
    assert "never runs code from a model folder" in line and "[y/N]" not in done.stderr


def test_auto_map_with_a_transformers_class_loads_tokenizer_json_only(tmp_path):
    model = copy_stories(tmp_path / "m")
    marker = tmp_path / "RAN"
    write_evil_code(model, marker)
    edit_json(model / "tokenizer_config.json", auto_map={"AutoTokenizer": ["evil.EvilTok", None]})
    edit_json(model / "config.json", auto_map={"AutoConfig": "evil.EvilConfig"})
    tokenizer = mg.load(model).tokenizer
    assert tokenizer.encode("Once upon") == mg.load(STORIES).tokenizer.encode("Once upon")
    assert not marker.exists()


def test_unknown_tokenizer_class_without_code_uses_tokenizer_json(tmp_path):
    model = copy_stories(tmp_path / "m")
    edit_json(model / "tokenizer_config.json", tokenizer_class="NoSuchTokenizer")
    assert mg.load(model).tokenizer.encode("Once") == mg.load(STORIES).tokenizer.encode("Once")


@pytest.mark.parametrize("key", ["chat_template_type", "tool_parser_type"])
@pytest.mark.parametrize("value", ["bogus", "__init__", "..os", 3])
def test_template_and_tool_parser_types_must_be_mlx_lm_modules(tmp_path, key, value):
    model = copy_stories(tmp_path / "m")
    edit_json(model / "tokenizer_config.json", **{key: value})
    with pytest.raises(ValueError) as err:
        mg.load(model)
    assert f"tokenizer_config.json: {key}={value!r} is invalid (valid: " in str(err.value)


def test_gguf_chat_template_is_sandboxed_and_named(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.gguf"
    metadata = {**byte_level_metadata(), "tokenizer.chat_template": evil_template(marker)}
    write_model(path, tiny_config(), tokenizer=metadata)
    with pytest.raises(ValueError) as err:
        mg.generate(mg.load(path), messages=CHAT, settings=mg.GenerationSettings(max_tokens=2))
    assert str(err.value).startswith(f"{path} (tokenizer.chat_template): the chat template was")
    assert "blocked by the sandbox" in str(err.value) and not marker.exists()
