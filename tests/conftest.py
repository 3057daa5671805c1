"""Shared fixtures: the read-only ../shared folder (tests skip when it is absent) and file writers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from usdrl.data.synthetic import SyntheticConfig, prepare_synthetic
from usdrl.settings.sections import ModelSection

REPOSITORY = Path(__file__).resolve().parents[1]


def shared_path() -> Path:
    return Path(os.environ.get("USDRL_SHARED", REPOSITORY.parent / "shared"))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A small synthetic dataset, made once per test module."""
    root = tmp_path_factory.mktemp("synthetic")
    prepare_synthetic(root, SyntheticConfig(subjects=3, replications=1, training_subjects=(1, 2),
                                            streams_per_subject_camera=1))
    return root / "actions"  # xview train: 2 cameras x 3 subjects x 20 actions = 120 clips


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: several times faster than two on a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def shared() -> Path:
    path = shared_path()
    if not path.is_dir():
        pytest.skip(f"shared folder {path} is absent")
    return path


def write_skeleton_file(path: Path, frames: list[list[np.ndarray]]) -> Path:
    """An official-format .skeleton file; frames[t] is the list of bodies (25, 3) in that frame."""
    lines = [str(len(frames))]
    for bodies in frames:
        lines.append(str(len(bodies)))
        for number, joints in enumerate(bodies):
            lines.append(f"7205759403793{number:04d} 0 1 1 1 1 0 0.02 0.05 2")
            lines.append("25")
            for x, y, z in joints:
                lines.append(f"{x:.6f} {y:.6f} {z:.6f} 277.4 191.8 1036.2 519.1 -0.2 0.05 0.96 -0.12 2")
    path.write_text("\n".join(lines) + "\n")
    return path


def standing_body(rng: np.random.Generator, frames: int, moving: float = 0.05, offset=(0.0, 0.0, 3.0)) -> np.ndarray:
    """(T, 25, 3) a plausible body near ``offset`` with motion of amplitude ``moving``."""
    base = rng.uniform(-0.4, 0.4, size=(25, 3)) + np.asarray(offset)
    base[4] = np.asarray(offset) + [-0.2, 0.4, 0.0]
    base[8] = np.asarray(offset) + [0.2, 0.4, 0.05]
    motion = moving * np.sin(np.linspace(0, 6, frames))[:, None, None] * rng.normal(size=(1, 25, 3))
    return base[None] + motion


TINY_MODEL = ModelSection(hidden_size=16, num_layers=1)  # the tiny test encoder; TINY_SETTINGS as overrides

TINY_SETTINGS = [f"model.hidden_size={TINY_MODEL.hidden_size}", f"model.num_layers={TINY_MODEL.num_layers}", "pretrain.epochs=1", "pretrain.batch_size=16",
                 "pretrain.workers=0", "pretrain.device=cpu", "evaluation.device=cpu", "probe.epochs=2",
                 "probe.learning_rates={default: 0.5}", "detection.epochs=1", "detection.batch_size=32"]


def tiny_exported_model(root: Path) -> dict:
    """A tiny pretrained encoder (hidden size 16), its probe results and detection run, exported as a bundle
    under ``root`` (a few seconds on one thread): the valid inputs that validation tests change."""
    import torch

    from usdrl.data.synthetic import SyntheticConfig, prepare_synthetic
    from usdrl.deploy.bundle import export_bundle
    from usdrl.evaluate.detector import run_detection
    from usdrl.evaluate.protocols import run_linear_probe
    from usdrl.settings.params import load_params
    from usdrl.training.pretrain import pretrain

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        prepare_synthetic(root / "data", SyntheticConfig(subjects=3, replications=1, training_subjects=(1, 2),
                                                         streams_per_subject_camera=1))
        params = load_params(None, overrides=TINY_SETTINGS + [f"evaluation.cache_dir={root / 'cache'}"])
        pretrain(root / "data/actions", "xview", root / "run", params.model, params.augment, params.loss,
                 params.pretrain, progress=False)
        checkpoint = root / "run/checkpoints/last.pt"
        run_linear_probe(root / "data/actions", "xview", checkpoint, root / "probe.json", params)
        run_detection(root / "data/streams", "xsub", checkpoint, root / "detect", params, figures=0)
        export_bundle(checkpoint, root / "model", probe=root / "probe.json", detector=root / "detect")
    finally:
        torch.set_num_threads(previous)
    return {"root": root, "checkpoint": checkpoint, "params": params, "model": root / "model",
            "probe": root / "probe.json", "detect": root / "detect", "actions": root / "data/actions",
            "streams": root / "data/streams"}


def one_line_error(capsys, *expected: str) -> str:
    """The one line a refused command wrote on stderr (no traceback), holding every text of ``expected``."""
    error = capsys.readouterr().err
    lines = [line for line in error.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in error, error
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def pytest_collection_modifyitems(items):
    """A notebook test is a slow test: ``pytest -m "not slow"`` leaves out every test that runs papermill."""
    for item in items:
        if item.get_closest_marker("notebook") and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
