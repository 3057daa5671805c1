"""dvc.yaml tells the truth about code: every stage depends on all the package code it runs.

A stage's code is derived from what it runs: the imports of the notebooks it runs with papermill (each
command between ``&&``), or the CLI command's module (and ``python -m`` modules), followed transitively through usdrl/ (imports inside functions too, and the
packages' __init__.py). A stage depends on the folders of the subpackages and on the top-level modules that
code is in. Then a real ``dvc status`` in a copy of the repository must mark, after an edit of a module, every
stage that runs it and no stage that runs nothing of its package.
"""

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPOSITORY

PACKAGE = "usdrl"


def _module_file(module: str) -> Path | None:
    path = REPOSITORY.joinpath(*module.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def _imports(tree: ast.AST, module: str = "", top_level_only: bool = False) -> set[str]:
    """The package modules a module (or notebook) imports; relative imports resolved against ``module``."""
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if _module_file(module).name == "__init__.py" else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from usdrl import pipeline`
    return {name for name in found if name.split(".")[0] == PACKAGE and _module_file(name)}


def code_of(modules: set[str]) -> set[str]:
    """Files (relative to the repository) of ``modules``, their parent packages and everything they import."""
    seen, pending = set(), list(modules)
    while pending:
        parts = pending.pop().split(".")
        for end in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py
            module = ".".join(parts[:end])
            if module not in seen and _module_file(module):
                seen.add(module)
                pending += _imports(ast.parse(_module_file(module).read_text()), module)
    return {_module_file(module).relative_to(REPOSITORY).as_posix() for module in seen}


def _notebook_modules(path: Path) -> set[str]:
    cells = json.loads(path.read_text())["cells"]
    source = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    return _imports(ast.parse(source))


def stage_code(cmd: str) -> set[str]:
    """The package files a stage command runs."""
    modules, files = set(), set()
    for part in cmd.split("&&"):
        words = part.split()
        if not words:
            continue
        if words[0] == "papermill":  # papermill NOTEBOOK OUTPUT --cwd notebooks -p NAME VALUE ...
            modules |= _notebook_modules(REPOSITORY / words[1])
        elif words[0] == "usdrl":  # the console script: usdrl.cli.main
            modules.add(f"{PACKAGE}.cli.main")
        elif words[:2] == ["python", "-m"] and words[2].startswith(PACKAGE):
            modules.add(words[2])
        elif words[0] == "mkdir":  # the folder papermill writes the executed copy into: no package code
            continue
        else:
            raise AssertionError(f"no rule for the code a stage command runs: {part.strip()}")
    return code_of(modules) | files


def packages_of(files: set[str]) -> list[str]:
    """The deps that cover ``files``: each subpackage as its folder (usdrl/data), each top-level module as its file."""
    return sorted({"/".join(path.split("/")[:2]) for path in files})


def _stages() -> dict[str, dict]:
    """Stage name -> {cmd, deps} as written in dvc.yaml (foreach stages once, by their template)."""
    stages = yaml.safe_load((REPOSITORY / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def test_the_import_analysis_sees_imports_inside_functions_and_package_inits():
    code = code_of({"usdrl.cli.main"})
    assert "usdrl/project/report.py" in code  # cli/main.py imports build_tables inside _run_report
    assert {"usdrl/__init__.py", "usdrl/data/__init__.py", "usdrl/data/store.py"} <= code
    assert "usdrl/project/report.py" not in code_of({"usdrl.nn.losses"})


def test_a_stage_of_two_papermill_commands_runs_the_code_of_both_notebooks():
    data = "papermill notebooks/01_data_prep.ipynb results/notebooks/01.ipynb --cwd notebooks -p dataset synthetic"
    pretrain = "papermill notebooks/02_pretrain.ipynb results/notebooks/02.ipynb --cwd notebooks -p dataset synthetic"
    both = stage_code(f"{data} && {pretrain}")
    assert "usdrl/training/pretrain.py" in both and "usdrl/training/pretrain.py" not in stage_code(data)
    assert "usdrl/data/synthetic.py" in both and "usdrl/data/synthetic.py" not in stage_code(pretrain)
    assert stage_code(data) | stage_code(pretrain) == both


def test_a_stage_missing_a_dependency_on_code_its_notebook_imports_is_named():
    stage = _stages()["frozen_evaluation"]
    deps = [dep for dep in stage["deps"] if dep != "usdrl/evaluate"]
    assert len(deps) == len(stage["deps"]) - 1
    with pytest.raises(AssertionError, match="add to deps: usdrl/evaluate"):
        _check_stage("frozen_evaluation", {**stage, "deps": deps})
    with pytest.raises(AssertionError, match="remove from deps .*: usdrl/evaluate/retrieval.py"):
        _check_stage("frozen_evaluation", {**stage, "deps": [*stage["deps"], "usdrl/evaluate/retrieval.py"]})


@pytest.mark.parametrize("name", sorted(_stages()))
def test_every_stage_depends_on_the_code_it_runs(name):
    _check_stage(name, _stages()[name])


def _check_stage(name: str, stage: dict) -> None:
    deps = [str(dep) for dep in stage.get("deps", [])]
    for word in stage["cmd"].split():
        if word.startswith("notebooks/") and word.endswith(".ipynb"):
            assert word in deps, f"stage {name} runs {word} but does not depend on it"
    needed = stage_code(stage["cmd"])
    assert needed, f"stage {name}: no package code found in its command"
    code_deps = [dep for dep in deps if dep.startswith(f"{PACKAGE}/")]
    missing = sorted(set(packages_of(needed)) - set(code_deps))
    assert not missing, f"dvc.yaml, stage {name}: add to deps: {', '.join(missing)}"
    extra = sorted(set(code_deps) - set(packages_of(needed)))
    assert not extra, (f"dvc.yaml, stage {name}: remove from deps (the stage runs no code of them, or they are files "
                       f"of a package whose folder is the dep): {', '.join(extra)}")


def _copy_of_repository(destination: Path) -> Path:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPOSITORY,
                            capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    for name in listed.stdout.split("\0"):
        source = REPOSITORY / name
        if name and source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    shutil.copy2(REPOSITORY / "dvc.lock", destination / "dvc.lock")
    subprocess.run(["git", "init", "-q"], cwd=destination, check=True)
    return destination


def _dvc_status(project: Path) -> dict[str, dict[str, str]]:
    """Stage -> {changed dependency: how} as ``dvc status`` reports it."""
    result = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=project, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return {stage: {path: how for change in changes if isinstance(change, dict)
                    for path, how in change.get("changed deps", {}).items()}
            for stage, changes in json.loads(result.stdout or "{}").items()}


def _record_code_hashes(project: Path) -> None:
    """In the copy, keep of each stage its command and code deps (package folders, modules, notebooks) and let
    ``dvc commit`` record their current hashes, so that the status afterwards shows only the test's edit,
    whatever the committed dvc.lock holds."""
    pipeline = yaml.safe_load((project / "dvc.yaml").read_text())
    for stage in pipeline["stages"].values():
        body = stage.get("do", stage)
        body["deps"] = [dep for dep in body.get("deps", []) if str(dep).startswith((f"{PACKAGE}/", "notebooks/"))]
        for key in ("outs", "metrics", "plots", "params"):
            body.pop(key, None)
    (project / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    (project / "dvc.lock").unlink()
    committed = subprocess.run([sys.executable, "-m", "dvc", "commit", "--force", "--quiet"], cwd=project,
                               capture_output=True, text=True, timeout=300)
    assert committed.returncode == 0, committed.stderr


def test_dvc_status_marks_exactly_the_stages_that_run_an_edited_module(tmp_path):
    pytest.importorskip("dvc")
    project = _copy_of_repository(tmp_path / "copy")
    _record_code_hashes(project)
    stages = {name: stage_code(body["cmd"]) for name, body in _stages().items()}
    for module in ("usdrl/skeleton.py", "usdrl/evaluate/detector.py"):
        before = _dvc_status(project)
        with open(project / module, "a") as handle:
            handle.write("\n# edited by the test\n")
        after = _dvc_status(project)
        dep = packages_of({module})[0]  # usdrl/skeleton.py, usdrl/evaluate
        assert not any(before.values()), f"before the edit of {module}, dvc status marks {before}"
        assert any(dep in changed for changed in after.values()), f"no stage depends on {module}"
        for name in stages:
            instances = [key for key in after if key.split("@")[0] == name]
            marked = any(after[key].get(dep) == "modified" for key in instances)
            runs_it = module in stages[name]
            if runs_it:
                assert marked, f"after an edit of {module}, dvc status does not mark stage {name}, which runs it"
            if marked:
                assert any(path.startswith(dep) for path in stages[name]), (
                    f"after an edit of {module}, dvc status marks stage {name}, which runs no code of {dep}")
        with open(project / module, "rb+") as handle:  # the edit undone: the next module starts clean
            content = handle.read()
            handle.seek(0)
            handle.write(content.removesuffix(b"\n# edited by the test\n"))
            handle.truncate()
