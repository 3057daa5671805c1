"""Property-based fuzzing of everything read from outside: one field at a time of a valid bundle's model.json, a
checkpoint's recorded settings, a results file, a manifest, a layout and a params file is replaced (wrong type,
out of range, huge, non-finite), removed or joined by an extra one; the loaders must then either work or refuse
with one of the project's errors in one line, never another exception."""

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_exported_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usdrl import load_model
from usdrl.data.errors import DataError
from usdrl.data.fingerprint import file_sha256
from usdrl.data.store import load_split
from usdrl.deploy.bundle import description_digest, detector_head, encoder_of_checkpoint, probe_head
from usdrl.evaluate.features import open_encoder
from usdrl.settings.params import load_params
from usdrl.settings.sections import ConfigError, ModelSection
from usdrl.skeleton import LayoutError, load_layout, ntu25_layout
from usdrl.training.checkpoint_files import CheckpointError, load_checkpoint

CLEAR_ERRORS = (DataError, LayoutError, ConfigError, CheckpointError)  # BundleError is a CheckpointError
FUZZ = settings(max_examples=int(os.environ.get("USDRL_FUZZ_EXAMPLES", "60")), deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])

# Replacement values: wrong types, out of range, huge, non-finite
VALUES = st.one_of(
    st.none(), st.booleans(), st.sampled_from([0, -1, -5, 2, 5, 10**9, 10**18, 8192]),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, -0.5, 2.5]),
    st.sampled_from(["", "abc", "joint", "auto", "1e9", "x" * 1000]),
    st.just([]), st.just([1, 2]), st.just(["a"]), st.just({}), st.just({"a": 1}), st.just([[1, 2], [3]]),
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return tiny_exported_model(tmp_path_factory.mktemp("fuzzed"))


def _paths(value, prefix=(), deepest=3):
    """Every path (tuple of keys or positions) into the JSON-like ``value``, down to ``deepest`` levels."""
    found = [prefix] if prefix else []
    if len(prefix) < deepest:
        if isinstance(value, dict):
            for key, item in value.items():
                found += _paths(item, (*prefix, key), deepest)
        elif isinstance(value, list):
            for position, item in enumerate(value[:3]):
                found += _paths(item, (*prefix, position), deepest)
    return found


@st.composite
def mutations(draw, document, deepest=3, keep=()):
    """(path, kind, value): one field of ``document`` replaced, removed, or an extra key beside it."""
    paths = [path for path in _paths(document, deepest=deepest) if path[:1] not in {(key,) for key in keep}]
    path = draw(st.sampled_from(paths))
    kind = draw(st.sampled_from(["replace", "replace", "replace", "remove", "extra"]))
    return path, kind, draw(VALUES)


def _mutated(document, mutation):
    path, kind, value = mutation
    changed = json.loads(json.dumps(document)) if not isinstance(document, dict) or _is_json(document) \
        else _copy(document)
    target = changed
    for key in path[:-1]:
        target = target[key]
    last = path[-1]
    if kind == "replace":
        target[last] = value
    elif kind == "remove":
        target.pop(last) if isinstance(target, dict) else target.pop(last)
    elif isinstance(target, dict):
        target["unexpected_extra_field"] = value
    return changed


def _is_json(document):
    try:
        json.dumps(document)
        return True
    except (TypeError, ValueError):
        return False


def _copy(document):
    import copy

    return copy.deepcopy(document)


def _clear_or_valid(action):
    """Run ``action``: a valid result, or one of the project's errors in one line."""
    try:
        action()
    except CLEAR_ERRORS as error:
        assert "\n" not in str(error) and str(error), repr(error)


@pytest.fixture(scope="module")
def description(trained):
    return json.loads((trained["model"] / "model.json").read_text())


@pytest.mark.slow
def test_fuzzed_model_json(trained, description):
    @FUZZ
    @given(mutation=mutations(description, keep=("format", "format_version", "description_sha256", "files")))
    def check(mutation):
        with tempfile.TemporaryDirectory() as folder:
            copy = Path(folder) / "model"
            shutil.copytree(trained["model"], copy)
            changed = _mutated(description, mutation)
            changed["description_sha256"] = description_digest(changed)
            (copy / "model.json").write_text(json.dumps(changed))

            def use():
                model = load_model(copy)
                clips = np.random.default_rng(0).normal(size=(1, 3, 20, 25, 2)).astype(np.float32)
                model.embed(clips)
                if model.classifier is not None:
                    model.recognize(clips)
            _clear_or_valid(use)
    check()


@pytest.fixture(scope="module")
def checkpoint_content(trained):
    return load_checkpoint(trained["checkpoint"])


def test_fuzzed_checkpoint_settings(trained, checkpoint_content):
    recorded = {"encoder_config": checkpoint_content["encoder_config"], "epoch": checkpoint_content["epoch"],
                "layout": checkpoint_content["layout"],
                "run": {name: checkpoint_content["run"][name] for name in ("model", "augment", "loss", "pretrain")}}

    @FUZZ
    @given(mutation=mutations(recorded))
    def check(mutation):
        changed = _mutated(recorded, mutation)
        content = {**checkpoint_content, **changed}
        if isinstance(changed.get("run"), dict):  # the run's other records (data, device) as saved
            content["run"] = {**checkpoint_content["run"], **changed["run"]}
        for key in set(recorded) - set(changed):
            content.pop(key, None)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "fuzzed.pt"
            torch.save(content, path)
            _clear_or_valid(lambda: open_encoder(path, ModelSection(hidden_size=16), ntu25_layout()))
            _clear_or_valid(lambda: encoder_of_checkpoint(path, trained["actions"], None, "dste"))
    check()


def test_fuzzed_results_files(trained):
    probe = json.loads(trained["probe"].read_text())
    detection = json.loads((trained["detect"] / "results.json").read_text())
    checksum = file_sha256(trained["checkpoint"])

    @FUZZ
    @given(which=st.sampled_from(["probe", "detection"]), data=st.data())
    def check(which, data):
        mutation = data.draw(mutations(probe if which == "probe" else detection))
        with tempfile.TemporaryDirectory() as folder:
            folder = Path(folder)
            if which == "probe":
                (folder / "probe.json").write_text(json.dumps(_mutated(probe, mutation)))
                shutil.copy(trained["probe"].with_suffix(".head.safetensors"), folder / "probe.head.safetensors")
                _clear_or_valid(lambda: probe_head(folder / "probe.json", checksum, "joint", 16))
            else:
                shutil.copy(trained["detect"] / "detector.safetensors", folder / "detector.safetensors")
                (folder / "results.json").write_text(json.dumps(_mutated(detection, mutation)))
                _clear_or_valid(lambda: detector_head(folder, checksum, ntu25_layout(), 64))
    check()


def test_fuzzed_manifest(trained):
    manifest = json.loads((trained["actions"] / "manifest.json").read_text())

    @FUZZ
    @given(mutation=mutations(manifest, deepest=2))
    def check(mutation):
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder) / "actions"
            shutil.copytree(trained["actions"], root)
            (root / "manifest.json").write_text(json.dumps(_mutated(manifest, mutation)))

            def use():
                split = load_split(root, "xview", "train")
                split.layout, split.class_names, split.sample(0)
            _clear_or_valid(use)
    check()


def test_fuzzed_layout(tmp_path):
    layout = ntu25_layout().to_dict()

    @FUZZ
    @given(mutation=mutations(layout, deepest=2))
    def check(mutation):
        path = tmp_path / "layout.yaml"
        path.write_text(yaml.safe_dump(_mutated(layout, mutation)))
        _clear_or_valid(lambda: load_layout(path))
    check()


def test_fuzzed_params(tmp_path):
    params = yaml.safe_load(Path(__file__).resolve().parents[1].joinpath("params.yaml").read_text())
    params.pop("profiles", None)

    @FUZZ
    @given(mutation=mutations(params, deepest=2))
    def check(mutation):
        path = tmp_path / "params.yaml"
        changed = _mutated(params, mutation)
        try:
            path.write_text(yaml.safe_dump(changed))
        except yaml.YAMLError:
            return
        _clear_or_valid(lambda: load_params(path))
    check()
