"""The structured-output flags: --json-schema, --regex, --grammar, --choice."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from mlx_gen.cli.main import main
from tests.conftest import STORIES

pytestmark = pytest.mark.skipif(not (STORIES / "config.json").exists(), reason="no stories260K")
SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "maximum": 9}},
    "required": ["ok", "n"],
    "additionalProperties": False,
}
BASE = ["--model", str(STORIES), "--prompt", "Once", "--temp", "1", "--seed", "3"]


def run(capsys, *args):
    code = main([*BASE, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_schema_from_text_and_from_a_file(capsys, tmp_path):
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    for value in (json.dumps(SCHEMA), str(path)):
        code, out, err = run(capsys, "--json-schema", value, "--max-tokens", "80", "--json")
        doc = json.loads(out)
        assert code == 0 and doc["finish_reason"] == "stop" and doc["constraint_complete"]
        jsonschema.validate(json.loads(doc["text"]), SCHEMA)


def test_regex_grammar_and_choice(capsys, tmp_path):
    code, out, _ = run(capsys, "--regex", r"[0-9]{3}-[a-z]{2}")
    assert code == 0 and re.fullmatch(r"[0-9]{3}-[a-z]{2}", out.rstrip("\n"))
    lark = tmp_path / "g.lark"
    lark.write_text('start: "go " DIR\nDIR: "north" | "south"\n')
    code, out, _ = run(capsys, "--grammar", str(lark))
    assert code == 0 and out.rstrip("\n") in ("go north", "go south")
    code, out, _ = run(capsys, "--choice", "yes", "--choice", "no")
    assert code == 0 and out.rstrip("\n") in ("yes", "no")


def test_incomplete_and_constraint_finishes_are_reported(capsys):
    code, out, err = run(capsys, "--json-schema", json.dumps(SCHEMA), "--max-tokens", "3")
    assert code == 0 and "the output is incomplete" in err
    code, out, err = run(capsys, "--choice", "yes", "--min-new-tokens", "9", "--json")
    doc = json.loads(out)
    assert (doc["text"], doc["finish_reason"]) == ("yes", "constraint")
    assert "constraint: generation ended" in err and doc["finish_message"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--json-schema", "{bad"], "argument --json-schema: JsonSchema: the schema text is not"),
        (["--json-schema", "/no/such/file"], "argument --json-schema: cannot read"),
        (["--json-schema", '{"type": "array", "uniqueItems": true}'], "uniqueItems"),
        (["--regex", "a(b"], "argument --regex: Regex('a(b') is invalid"),
        (["--grammar", "/no/such.lark"], "argument --grammar: cannot read"),
        (["--regex", "a", "--choice", "b"], "not allowed with argument --regex"),
        (["--choice", ""], "argument --choice"),
        (["--score", " x", "--regex", "a"], "--regex cannot be combined with --score"),
    ],
)
def test_bad_structured_flags_exit_2_with_one_error_line(capsys, args, message):
    code, out, err = run(capsys, *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


@pytest.mark.parametrize("flag", ["--grammar", "--json-schema"])
def test_constraint_files_are_read_with_the_prompt_file_cap(capsys, tmp_path, flag):
    # Before: read whole (--grammar /dev/zero grew to 24 GB and was OOM-killed).
    code, out, err = run(capsys, flag, "/dev/zero")
    assert (code, out) == (2, "")
    expected = (
        f"error: argument {flag}: '/dev/zero' is larger than 32 MiB, the most mlx-gen reads\n"
    )
    assert err == expected
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b'start: "a\xff"')
    code, out, err = run(capsys, flag, str(bad))
    assert (code, out) == (2, "")
    assert err == (
        f"error: argument {flag}: {str(bad)!r} is not valid UTF-8 (byte 0xff at offset 9)\n"
    )
