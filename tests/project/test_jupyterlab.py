"""A notebook opened in a real JupyterLab server loads its params: the kernel starts in notebooks/, the notebook
finds the project root above it."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from conftest import REPOSITORY

pytest.importorskip("jupyterlab")
pytest.importorskip("jupyter_server")
websocket = pytest.importorskip("websocket")  # websocket-client, a dependency of jupyter_server

NOTEBOOK = "notebooks/03_linear_probe.ipynb"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _loading_code(notebook: Path) -> str:
    """The notebook's parameters cell and its next cell up to the line that loads the params."""
    cells = [cell for cell in json.loads(notebook.read_text())["cells"] if cell["cell_type"] == "code"]
    position = next(i for i, cell in enumerate(cells) if "parameters" in cell["metadata"].get("tags", []))
    lines = []
    for line in "".join(cells[position + 1]["source"]).splitlines():
        lines.append(line)
        if "=" in line and line.split("=")[0].strip().endswith("params"):  # root, params = ... (the loading line)
            break
    return "".join(cells[position]["source"]) + "\n" + "\n".join(lines)


class Server:
    def __init__(self, root: Path, home: Path) -> None:
        self.port, self.token = _free_port(), uuid.uuid4().hex
        environment = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "run"),
                       "IPYTHONDIR": str(home / "ipython")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
             "--ServerApp.port_retries=0", "--allow-root", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={root}"],
            env=environment, stdout=subprocess.DEVNULL, stderr=open(home / "server.log", "w"))
        self.log = home / "server.log"

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
        return json.loads(text) if text else {}

    def wait_until_ready(self, seconds: float = 90) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"jupyter lab exited: {self.log.read_text()[-2000:]}")
            try:
                self.request("GET", "/api/status")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        pytest.fail(f"jupyter lab did not answer in {seconds} s: {self.log.read_text()[-2000:]}")

    def execute(self, kernel: str, code: str, seconds: float = 120) -> tuple[str, list[dict]]:
        """Run code in a kernel over the server's websocket; (status, messages of the request)."""
        channel = websocket.create_connection(
            f"ws://127.0.0.1:{self.port}/api/kernels/{kernel}/channels?token={self.token}", timeout=seconds)
        try:
            message_id = uuid.uuid4().hex
            channel.send(json.dumps({
                "header": {"msg_id": message_id, "msg_type": "execute_request", "username": "test",
                           "session": uuid.uuid4().hex, "version": "5.3"},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                            "allow_stdin": False, "stop_on_error": True}}))
            replies = []
            while True:
                reply = json.loads(channel.recv())
                if reply.get("parent_header", {}).get("msg_id") != message_id:
                    continue
                replies.append(reply)
                if reply["msg_type"] == "execute_reply":
                    return reply["content"]["status"], replies
        finally:
            channel.close()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def test_a_notebook_opened_in_jupyterlab_loads_its_params(tmp_path):
    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    for name in ("params.yaml", "dvc.yaml", NOTEBOOK):
        shutil.copy2(REPOSITORY / name, project / name)
    server = Server(project, tmp_path)
    try:
        server.wait_until_ready()
        session = server.request("POST", "/api/sessions", {"path": NOTEBOOK, "type": "notebook", "name": "",
                                                           "kernel": {"name": "python3"}})
        code = _loading_code(project / NOTEBOOK) + (
            "\nimport json\nimport os\nprint(json.dumps({'cwd': os.getcwd(), 'root': str(root), 'data': params.data.root}))")
        status, replies = server.execute(session["kernel"]["id"], code)
        errors = [reply["content"] for reply in replies if reply["msg_type"] == "error"]
        assert status == "ok", f"loading the params failed in JupyterLab: {errors}"
        printed = "".join(reply["content"]["text"] for reply in replies if reply["msg_type"] == "stream")
        found = json.loads(printed.strip().splitlines()[-1])
        assert Path(found["cwd"]) == (project / "notebooks").resolve()  # JupyterLab starts the kernel beside the notebook
        assert Path(found["root"]) == project.resolve() and Path(found["data"]) == project.resolve() / "data"
        server.request("DELETE", f"/api/sessions/{session['id']}")
    finally:
        server.stop()
