"""The package layout: imports only go down (surfaces → engine → loading/processors/logprobs).

The import graph is read with ``ast`` (no module is executed), function-local imports
included, and each import is checked against the layer table below.
"""

import ast
import shutil
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mlx_gen"

# What each layer may import (besides itself). "engine" is the flat modules of mlx_gen/;
# "facade" is mlx_gen/__init__.py and the `python -m mlx_gen.generate` entry.
LOWER = {"loading", "processors", "logprobs", "constraints"}
ALLOWED = {
    "loading": set(),
    "processors": set(),
    "logprobs": set(),
    "constraints": set(),
    "convert": {"loading"},
    "engine": LOWER,
    "batch": LOWER | {"engine"},
    "cli": LOWER | {"engine", "batch", "facade"},
    "server": LOWER | {"engine", "batch", "facade"},
    "facade": LOWER | {"engine", "batch", "cli", "convert", "server"},
}


def layer_of(module: str) -> str:
    """The layer of a dotted module name inside mlx_gen (``mlx_gen.batch.step`` → batch)."""
    parts = module.split(".")
    assert parts[0] == "mlx_gen", module
    if len(parts) == 1 or parts[1] in ("__init__", "generate"):
        return "facade"
    if parts[1] in ALLOWED:
        return parts[1]
    return "engine"


def module_name(path: Path, root: Path) -> str:
    """``root/mlx_gen/batch/step.py`` → ``mlx_gen.batch.step``."""
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path, name: str) -> list[str]:
    """Every mlx_gen module that ``path`` imports, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.append(base)
    return [m for m in found if m == "mlx_gen" or m.startswith("mlx_gen.")]


def upward_imports(root: Path) -> list[str]:
    """Each import in ``root`` (an mlx_gen folder) that goes against the layer table."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        source = layer_of(name)
        for target in imported_modules(path, name):
            layer = layer_of(target)
            if layer != source and layer not in ALLOWED[source]:
                bad.append(f"{name} ({source}) imports {target} ({layer})")
    return bad


def test_imports_only_go_down():
    assert upward_imports(PACKAGE) == []


def test_every_subpackage_says_what_it_may_import():
    for init in PACKAGE.rglob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and 2 <= len(doc.splitlines()) <= 20, init
        if init.parent.parent == PACKAGE:
            assert "import" in doc, f"{init} does not say what it may import"


def test_an_upward_import_is_caught(tmp_path):
    copy = tmp_path / "mlx_gen"
    shutil.copytree(PACKAGE, copy)
    target = copy / "loading" / "sources.py"
    target.write_text(target.read_text() + "\n\ndef _late():\n    from mlx_gen.cli import main\n")
    (copy / "decode.py").write_text(
        (copy / "decode.py").read_text() + "\nfrom .batch import step as _step\n"
    )
    assert upward_imports(copy) == [
        "mlx_gen.decode (engine) imports mlx_gen.batch (batch)",
        "mlx_gen.loading.sources (loading) imports mlx_gen.cli (cli)",
    ]


def test_layer_names():
    assert layer_of("mlx_gen") == "facade"
    assert layer_of("mlx_gen.batch.step") == "batch"
    assert layer_of("mlx_gen.decode") == "engine"
    assert layer_of("mlx_gen.loading.gguf.reader") == "loading"
