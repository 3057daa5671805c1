"""Run notebooks inside this Python process, as papermill runs them in a kernel: what dvc.yaml's stages call.

    python -m usdrl.notebook_runner notebooks/03_linear_probe.ipynb results/notebooks/03_x.ipynb -p dataset synthetic \
        --then notebooks/05_retrieval.ipynb results/notebooks/05_x.ipynb -p dataset synthetic

papermill starts a Jupyter kernel (a second Python process talking over ZeroMQ) and imports nbformat, whose
schema checks alone take about a second to import: about 2.5 s per notebook on a 2-core CPU before its first
line runs, for every stage of the pipeline. Here the cells run in an IPython shell in this process, and the
notebooks of one command share its imports (torch is imported once); each notebook starts with an empty
namespace. The executed copy is what papermill writes: the parameters injected after the cell tagged
``parameters`` (a cell tagged ``injected-parameters``), every cell's outputs (text, results, pictures, the
error) and papermill's timing records (``metadata.papermill``, read by benchmarks/pipeline_profile.py).
Text is captured where Python code writes it (``sys.stdout``, ``sys.stderr``); what C code writes to the file
descriptors (a torch warning from C++) goes to the terminal. Between notebooks the working directory, open
figures and matplotlib's backend are restored; anything else a notebook changes in the process (random
generators, torch's thread count) stays, so every notebook sets what it needs (ours seed through the package).
A parameter the notebook does not declare is an error. A failing cell stops the command: the executed copy
shows the error, the error is printed, and the exit status is 1. Opened in JupyterLab or run with papermill,
the notebooks behave the same.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

USAGE = ("usage: python -m usdrl.notebook_runner NOTEBOOK OUTPUT [-p NAME VALUE ...] [-y YAML] "
         "[--then NOTEBOOK OUTPUT [-p NAME VALUE ...] [-y YAML] ...]")


class _Outputs:
    """The outputs of the cell being run, in the notebook format."""

    def __init__(self) -> None:
        self.items: list[dict] = []

    def add_text(self, name: str, text: str) -> None:
        if not text:
            return
        if self.items and self.items[-1].get("output_type") == "stream" and self.items[-1]["name"] == name:
            self.items[-1]["text"] += text
        else:
            self.items.append({"output_type": "stream", "name": name, "text": text})

    def add_data(self, output_type: str, data: dict, metadata: dict | None, **fields) -> None:
        encoded = {mime: base64.b64encode(value).decode("ascii") if isinstance(value, bytes) else value
                   for mime, value in data.items()}
        self.items.append({"output_type": output_type, **fields, "data": encoded, "metadata": metadata or {}})


class _Stream(io.TextIOBase):
    """sys.stdout / sys.stderr while notebooks run: text goes to the outputs of the cell running now (also from
    a logging handler made in an earlier cell)."""

    encoding = "utf-8"

    def __init__(self, shell: _Shell, name: str) -> None:
        super().__init__()
        self.shell, self.name = shell, name

    def write(self, text: str) -> int:
        self.shell.cell_outputs.add_text(self.name, text)
        return len(text)

    def writable(self) -> bool:
        return True


class _Publisher(DisplayPublisher):
    """display(...) and inline figures become display_data outputs."""

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs) -> None:
        self.shell.cell_outputs.add_data("display_data", data, metadata)


class _ResultHook(DisplayHook):
    """A cell's last expression becomes its execute_result output (no ``Out[n]:`` printed)."""

    def write_output_prompt(self) -> None:
        pass

    def write_format_data(self, format_dict, md_dict=None) -> None:
        self.shell.cell_outputs.add_data("execute_result", format_dict, md_dict, execution_count=self.prompt_count)


class _Shell(InteractiveShell):
    displayhook_class = _ResultHook
    display_pub_class = _Publisher
    cell_outputs = _Outputs()

    def enable_gui(self, gui=None) -> None:  # `%matplotlib inline`: figures are shown at the end of each cell
        pass

    def ask_exit(self) -> None:  # exit() in a cell: nothing to leave, the notebook goes on as in a kernel
        pass

    def _showtraceback(self, etype, evalue, stb) -> None:  # what ipykernel's shell does: the traceback is an output
        self.cell_outputs.items.append({"output_type": "error", "ename": etype.__name__, "evalue": str(evalue),
                                        "traceback": list(stb)})


def _value(text: str):
    """A -p value as papermill reads it: True, False, None, an int, a float, or the text."""
    special = {"True": True, "False": False, "None": None}
    if text in special:
        return special[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _yaml_parameters(text: str) -> dict:
    import yaml

    try:
        parameters = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SystemExit(f"-y {text!r}: not YAML ({error})") from None
    if not isinstance(parameters, dict):
        raise SystemExit(f"-y {text!r}: not a mapping of parameter names to values")
    return parameters


def parse_arguments(arguments: list[str]) -> list[tuple[Path, Path, dict]]:
    """``NOTEBOOK OUTPUT [-p NAME VALUE ...] [-y YAML]`` groups separated by ``--then``, as (notebook, output,
    parameters); ``-y`` takes a YAML mapping of parameters (lists too), as papermill's ``-y`` does."""
    groups, current = [], []
    for word in arguments + ["--then"]:
        if word != "--then":
            current.append(word)
            continue
        if len(current) < 2 or current[0].startswith("-") or current[1].startswith("-"):
            raise SystemExit(USAGE)
        notebook, output, rest, parameters = Path(current[0]).resolve(), Path(current[1]).resolve(), current[2:], {}
        while rest:
            if rest[0] in ("-y", "--parameters_yaml") and len(rest) >= 2:
                parameters.update(_yaml_parameters(rest[1]))
                rest = rest[2:]
                continue
            if rest[0] not in ("-p", "--parameters") or len(rest) < 3:
                raise SystemExit(f"{' '.join(rest)}: not '-p NAME VALUE' or '-y YAML'\n{USAGE}")
            parameters[rest[1]] = _value(rest[2])
            rest = rest[3:]
        groups.append((notebook, output, parameters))
        current = []
    return groups


def _literal(value) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    return repr(value)


def _source(cell: dict) -> str:
    return cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])


def inject_parameters(notebook: dict, parameters: dict, path: Path) -> dict:
    """The cell papermill adds after the ``parameters`` cell; a name the notebook does not declare is an error."""
    cells = [cell for cell in notebook["cells"] if "injected-parameters" not in cell.get("metadata", {}).get("tags", [])]
    tagged = [i for i, cell in enumerate(cells) if "parameters" in cell.get("metadata", {}).get("tags", [])]
    declared = set(re.findall(r"^(\w+)\s*(?::[^=\n]*)?=", _source(cells[tagged[0]]), flags=re.MULTILINE)) if tagged else set()
    unknown = sorted(set(parameters) - declared)
    if unknown:
        raise SystemExit(f"{path}: no parameter {', '.join(unknown)} in its cell tagged 'parameters' "
                         f"(declared: {', '.join(sorted(declared)) or 'none'})")
    if not parameters:
        return {**notebook, "cells": cells}
    source = "# Parameters\n" + "".join(f"{name} = {_literal(value)}\n" for name, value in parameters.items())
    injected = {"cell_type": "code", "id": uuid.uuid4().hex[:8], "execution_count": None, "outputs": [],
                "metadata": {"tags": ["injected-parameters"]}, "source": source}
    cells.insert(tagged[0] + 1 if tagged else 0, injected)
    return {**notebook, "cells": cells}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _run_cell(shell: _Shell, cell: dict) -> bool:
    """Runs one code cell, records its outputs and papermill's timing; False when it raised."""
    shell.cell_outputs = _Outputs()
    started, clock = _now(), time.perf_counter()
    cell["execution_count"] = shell.execution_count
    result = shell.run_cell(_source(cell), store_history=True)
    if not result.success and not any(item["output_type"] == "error" for item in shell.cell_outputs.items):
        error = result.error_in_exec or result.error_before_exec  # e.g. an unknown %magic: a usage message only
        shell.cell_outputs.items.append({"output_type": "error", "ename": type(error).__name__,
                                         "evalue": str(error), "traceback": [f"{type(error).__name__}: {error}"]})
    cell["outputs"] = shell.cell_outputs.items
    cell.setdefault("metadata", {})["papermill"] = {
        "start_time": started, "end_time": _now(), "duration": time.perf_counter() - clock,
        "status": "completed" if result.success else "failed", "exception": not result.success}
    return result.success


def read_notebook(path: Path, parameters: dict) -> dict:
    """The notebook with its parameters injected; a file that is no notebook is named in one line."""
    try:
        return inject_parameters(json.loads(path.read_text()), parameters, path)
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
        raise SystemExit(f"{path}: not a notebook ({error})") from None


def _fresh_start(shell: _Shell, directory: Path) -> None:
    """An empty namespace in the command's working directory, no open figures, the kernel's figure backend."""
    shell.reset(new_session=False)
    shell.execution_count = 1
    os.chdir(directory)
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")
        sys.modules["matplotlib"].use(os.environ["MPLBACKEND"])


def _json_value(value):
    """What json cannot write by itself in an output (a NumPy scalar in a result's JSON form)."""
    return value.item() if hasattr(value, "item") else str(value)


def run_notebook(shell: _Shell, notebook: dict, path: Path, output: Path, parameters: dict) -> bool:
    """Executes one notebook in a fresh namespace and writes the executed copy (temporary name, then renamed)."""
    started, clock, failed = _now(), time.perf_counter(), None
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code" and failed is None and not _run_cell(shell, cell):
            failed = index
    record = notebook.setdefault("metadata", {}).setdefault("papermill", {})
    record.update({"input_path": str(path), "output_path": str(output), "parameters": parameters,
                   "runner": "usdrl.notebook_runner (in-process)", "start_time": started, "end_time": _now(),
                   "duration": time.perf_counter() - clock, "exception": failed is not None})
    # imported here: the usdrl.data package imports torch, which belongs to the notebook's own time (its cells)
    # and not to the runner's start (pipeline_profile counts that as time between notebooks)
    from usdrl.data.atomic_files import atomic_file

    with atomic_file(output) as temporary:
        temporary.write_text(json.dumps(notebook, indent=1, ensure_ascii=False, default=_json_value) + "\n")
    if failed is not None:
        error = next(item for item in notebook["cells"][failed]["outputs"] if item["output_type"] == "error")
        print("\n".join(error["traceback"]), file=sys.__stderr__)
        print(f"{path} failed in cell {failed} ({error['ename']}: {error['evalue']}); the executed copy with "
              f"the error: {output}", file=sys.__stderr__)
    return failed is None


def main(arguments: list[str] | None = None) -> int:
    """Runs every notebook of the command in order; stops at the first that fails (exit status 1)."""
    groups = parse_arguments(sys.argv[1:] if arguments is None else arguments)
    notebooks = [read_notebook(path, parameters) for path, _, parameters in groups]  # every one checked first
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # as in a Jupyter kernel
    settings = Config()
    settings.HistoryManager.enabled = False  # no ~/.ipython history database
    directory, streams, main_module = Path.cwd(), (sys.stdout, sys.stderr), sys.modules.get("__main__")
    shell = _Shell.instance(config=settings, colors="nocolor")  # as in a kernel, __main__ is now the notebook's
    sys.stdout, sys.stderr = _Stream(shell, "stdout"), _Stream(shell, "stderr")
    try:
        for notebook, (path, output, parameters) in zip(notebooks, groups):
            clock = time.perf_counter()
            _fresh_start(shell, directory)
            if not run_notebook(shell, notebook, path, output, parameters):
                return 1
            print(f"{path} -> {output} ({time.perf_counter() - clock:.1f} s)", file=streams[1])
    finally:  # called as a function (tests): the process as it was, multiprocessing's spawn needs __main__
        sys.stdout, sys.stderr = streams
        os.chdir(directory)
        sys.modules["__main__"] = main_module
        _Shell.clear_instance()
    return 0


if __name__ == "__main__":
    sys.exit(main())
