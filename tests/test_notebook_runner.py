"""usdrl.notebook_runner: notebooks run in one process with papermill's parameters, outputs and records."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("IPython")
from usdrl import notebook_runner  # noqa: E402

REPOSITORY = Path(__file__).resolve().parents[1]
PROFILE = REPOSITORY / "benchmarks" / "pipeline_profile.py"


def _notebook(path: Path, *sources: str, parameters: str = "a = 1\nb = 'x'\n") -> Path:
    cells = [{"cell_type": "code", "id": "p", "metadata": {"tags": ["parameters"]}, "source": parameters,
              "outputs": [], "execution_count": None}]
    cells += [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "source": source, "outputs": [],
               "execution_count": None} for i, source in enumerate(sources)]
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def _run(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "usdrl.notebook_runner", *arguments], cwd=cwd,
                          capture_output=True, text=True)


def test_parameters_outputs_and_papermills_records(tmp_path):
    source = _notebook(tmp_path / "in.ipynb", "print(a + 1, b)\nimport sys; print('warn', file=sys.stderr)",
                       "from IPython.display import display, HTML\ndisplay(HTML('<b>x</b>'))\n{'a': a}",
                       "import matplotlib.pyplot as plt\nplt.plot([0, 1])")
    done = _run(str(source), "out/run.ipynb", "-p", "a", "41", "-p", "b", "None", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    notebook = json.loads((tmp_path / "out/run.ipynb").read_text())
    injected = notebook["cells"][1]
    assert injected["metadata"]["tags"] == ["injected-parameters"] and injected["source"] == "# Parameters\na = 41\nb = None\n"
    printed, shown, figure = (cell["outputs"] for cell in notebook["cells"][2:])
    assert printed == [{"output_type": "stream", "name": "stdout", "text": "42 None\n"},
                       {"output_type": "stream", "name": "stderr", "text": "warn\n"}]
    assert shown[0]["output_type"] == "display_data" and shown[0]["data"]["text/html"] == "<b>x</b>"
    assert shown[1]["output_type"] == "execute_result" and shown[1]["data"]["text/plain"] == "{'a': 41}"
    assert any(output["output_type"] == "display_data" and "image/png" in output["data"] for output in figure)
    record = notebook["metadata"]["papermill"]
    assert record["parameters"] == {"a": 41, "b": None} and record["exception"] is False and record["duration"] > 0
    assert all(cell["metadata"]["papermill"]["status"] == "completed" for cell in notebook["cells"])
    profiled = subprocess.run([sys.executable, str(PROFILE), "--notebooks", str(tmp_path / "out")],
                              capture_output=True, text=True)
    assert profiled.returncode == 0 and "run" in profiled.stdout  # benchmarks/pipeline_profile.py reads it


def test_a_failing_cell_stops_the_command_and_the_copy_shows_the_error(tmp_path):
    first = _notebook(tmp_path / "first.ipynb", "x = 1", "raise ValueError(f'bad value {a}')", "print('never')")
    second = _notebook(tmp_path / "second.ipynb", "open('ran', 'w')")
    done = _run(str(first), "first.out.ipynb", "--then", str(second), "second.out.ipynb", cwd=tmp_path)
    assert done.returncode == 1 and "ValueError: bad value 1" in done.stderr and "first.out.ipynb" in done.stderr
    cells = json.loads((tmp_path / "first.out.ipynb").read_text())["cells"]
    assert cells[2]["outputs"][0]["output_type"] == "error" and cells[2]["outputs"][0]["ename"] == "ValueError"
    assert cells[2]["metadata"]["papermill"]["status"] == "failed" and cells[3]["outputs"] == []
    assert not (tmp_path / "ran").exists() and not (tmp_path / "second.out.ipynb").exists()
    assert not list(tmp_path.glob("*.tmp-*"))


def test_notebooks_of_one_command_share_the_process_not_the_namespace(tmp_path):
    first = _notebook(tmp_path / "first.ipynb", "import sys\nsys.modules['marker_module'] = sys\nleft = 1")
    second = _notebook(tmp_path / "second.ipynb", "import sys\nprint('marker_module' in sys.modules, 'left' in dir())")
    main_module = sys.modules["__main__"]
    assert notebook_runner.main([str(first), str(tmp_path / "1.ipynb"), "-y", "{a: [1, 2], b: y}",
                                 "--then", str(second), str(tmp_path / "2.ipynb")]) == 0
    assert sys.modules["__main__"] is main_module  # restored: multiprocessing's spawn in later tests needs it
    injected = json.loads((tmp_path / "1.ipynb").read_text())["cells"][1]["source"]
    assert injected == "# Parameters\na = [1, 2]\nb = 'y'\n"  # -y: a YAML mapping, lists too
    cells = json.loads((tmp_path / "2.ipynb").read_text())["cells"]
    assert cells[1]["outputs"][0]["text"] == "True False\n"  # imports shared; variables of the first gone


@pytest.mark.parametrize("arguments, message", [
    (["in.ipynb"], "usage"),
    (["in.ipynb", "out.ipynb", "-p", "a"], "not '-p NAME VALUE'"),
    (["in.ipynb", "out.ipynb", "-y", "[1, 2]"], "not a mapping"),
    (["in.ipynb", "out.ipynb", "-p", "typo", "1"], "no parameter typo"),
])
def test_bad_commands_are_refused_before_anything_runs(tmp_path, arguments, message):
    _notebook(tmp_path / "in.ipynb", "open('ran', 'w')")
    done = _run(*arguments, cwd=tmp_path)
    assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "ran").exists() and not (tmp_path / "out.ipynb").exists()


def test_a_file_that_is_no_notebook_is_named(tmp_path):
    (tmp_path / "in.ipynb").write_text("not json")
    done = _run("in.ipynb", "out.ipynb", cwd=tmp_path)
    assert done.returncode != 0 and "in.ipynb: not a notebook" in done.stderr and "Traceback" not in done.stderr


def test_what_cells_may_do_to_the_process_does_not_misplace_or_lose_the_copy(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    first = _notebook(tmp_path / "first.ipynb",
                      "import logging, os, numpy\nlogging.basicConfig(level=logging.INFO, force=True)\nos.chdir('elsewhere')",
                      "logging.getLogger('x').info('logged later')",
                      "class R:\n    def _repr_json_(self):\n        return {'v': numpy.float32(1.5)}\nR()",
                      "%matplotlib inline\nprint(a)")
    second = _notebook(tmp_path / "second.ipynb", "import os\nprint(os.path.basename(os.getcwd()))")
    done = _run(str(first), "1.ipynb", "-p", "a", "nan", "--then", str(second), "2.ipynb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    cells = json.loads((tmp_path / "1.ipynb").read_text())["cells"]  # where the command was started
    assert "logged later" in cells[3]["outputs"][0]["text"]  # in the cell that logged, not the one that set it up
    assert cells[4]["outputs"][0]["data"]["application/json"] == {"v": 1.5} and cells[5]["outputs"][0]["text"] == "nan\n"
    assert cells[1]["source"] == "# Parameters\na = float('nan')\n"  # as papermill writes it
    second_cells = json.loads((tmp_path / "2.ipynb").read_text())["cells"]
    assert second_cells[1]["outputs"][0]["text"] == f"{tmp_path.name}\n"  # the next notebook starts back home


def test_a_failure_without_a_traceback_is_still_reported(tmp_path):
    source = _notebook(tmp_path / "in.ipynb", "%no_such_magic")
    done = _run(str(source), "out.ipynb", cwd=tmp_path)
    assert done.returncode == 1 and "in.ipynb failed in cell 1" in done.stderr and "StopIteration" not in done.stderr
