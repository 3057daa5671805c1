"""The package's layers import downwards only: a module imports modules of its own layer or of layers below.

Every module must be placed in a layer here, so a new module is a decision, not an accident. Imports inside
functions count too (they run as soon as the function does).
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "usdrl"

# lowest first; a name ending in "." places every module under that package not named elsewhere
LAYERS = [
    # settings, layouts, the data layer, collectives, and metrics that need nothing but arrays
    ["validation", "skeleton", "config_sections", "config", "distributed", "bundle_card", "data", "data.", "auto_settings", "evaluate",
     "evaluate.detection", "evaluate.ensemble", "evaluate.retrieval"],
    # the machine (device, precision, seeds) and the figures (files under figures/)
    ["runtime", "plots", "data.inspect"],
    # the model and what trains it
    ["model", "losses", "augment", "loop"],
    # checkpoints and run folders
    ["checkpoint_files", "released_checkpoints", "checkpoint", "resume"],
    # pretraining and the protocols
    ["train", "evaluate."],
    # what notebooks and users call: the pipeline, reports, bundles, new skeletons
    ["pipeline", "report", "inputs", "inference", "onnx_export", "bundle"],
    # the command line
    ["cli", "cli_data", "cli_model"],
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(name: str) -> int:
    for rank, layer in enumerate(LAYERS):
        if name in layer:
            return rank
    for rank, layer in enumerate(LAYERS):
        if any(entry.endswith(".") and name.startswith(entry) for entry in layer):
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
    tree = ast.parse("def f():\n    from usdrl.train import pretrain\n")
    assert {_layer(name) for name in _imported(tree)} == {_layer("train")} and _layer("train") > _layer("model")
