"""The package's layers import downwards only: a module imports modules of its own layer or of layers below.

Every package and top-level module must be placed in a layer here, so a new one is a decision, not an accident. Imports inside
functions count too (they run as soon as the function does).
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "usdrl"

# lowest first: a package (every module in it) or a top-level module
LAYERS = [
    ["validation", "skeleton", "settings"],  # reading outside files safely, layouts and modalities, params.yaml
    ["data"],  # datasets in the canonical store: preparing, importing, reading
    ["plots"],  # the figures (files under figures/)
    ["nn"],  # encoders, losses, augmentations, collectives
    ["training"],  # the machine, the shared loop, pretraining, checkpoints, settings from the data
    ["evaluate"],  # the protocols and their metrics
    ["deploy", "project"],  # bundles and new skeletons; what notebooks and dvc.yaml use
    ["cli"],  # the command line
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(name: str) -> int:
    for rank, layer in enumerate(LAYERS):
        if name.split(".")[0] in layer:
            return rank
    raise AssertionError(f"usdrl.{name} is in no layer of tests/test_layers.py: place it there")


def _imported(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "usdrl":
            base = node.module.removeprefix("usdrl").lstrip(".")
            for alias in node.names:  # `from usdrl.data import store` imports the module usdrl.data.store
                child = f"{base}.{alias.name}".lstrip(".")
                is_module = (PACKAGE / Path(*child.split("."))).with_suffix(".py").is_file()
                found.add(child if is_module else base)
        elif isinstance(node, ast.Import):
            found |= {alias.name.removeprefix("usdrl").lstrip(".") for alias in node.names
                      if alias.name.split(".")[0] == "usdrl"}
    return {name for name in found if name}


def test_every_import_inside_the_package_goes_down_or_sideways():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        if not name:
            continue  # usdrl/__init__.py: the public entry points, above everything
        for imported in sorted(_imported(ast.parse(path.read_text()))):
            if _layer(imported) > _layer(name):
                upward.append(f"usdrl.{name} (layer {_layer(name)}) imports usdrl.{imported} (layer {_layer(imported)})")
    assert not upward, "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path):
    tree = ast.parse("def f():\n    from usdrl.training.pretrain import pretrain\n")
    assert {_layer(name) for name in _imported(tree)} == {_layer("training")} and _layer("training") > _layer("nn")
