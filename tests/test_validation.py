"""Everything read from outside is validated (usdrl.validation): each damaged bundle, checkpoint, results file,
layout, params file, pickle or command-line value gets one line and exit 2, before anything large is allocated."""

import errno
import json
import os
import pickle
import shutil
import stat
import time

import numpy as np
import pytest
import torch
from conftest import one_line_error, standing_body, tiny_exported_model, write_skeleton_file

from usdrl import load_model
from usdrl.cli.main import main
from usdrl.data.errors import DataError
from usdrl.data.safe_pickle import load_pickle
from usdrl.deploy.bundle import BundleError, description_digest, export_bundle
from usdrl.settings.params import load_params
from usdrl.settings.sections import ConfigError
from usdrl.skeleton import LayoutError, load_layout
from usdrl.training.checkpoint_files import load_checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return tiny_exported_model(tmp_path_factory.mktemp("trained"))


def _changed_bundle(trained, tmp_path, change):
    """A copy of the bundle whose model.json ``change`` edited, its own checksum recomputed (so that the
    validation, not the checksum, is what refuses it)."""
    copy = tmp_path / "model"
    shutil.copytree(trained["model"], copy)
    description = json.loads((copy / "model.json").read_text())
    change(description)
    description["description_sha256"] = description_digest(description)
    (copy / "model.json").write_text(json.dumps(description))
    return copy


def _set(path, value):
    def change(description):
        *parents, last = path
        target = description
        for key in parents:
            target = target[key]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
    return change


BUNDLE_CHANGES = [
    (("class_names",), 3, "class_names must be a list of strings or null, got 3"),
    (("class_names",), None, "class_names must be a list of 20 names"),
    (("class_names",), ["a", "b"], "class_names must be a list of 20 names"),
    (("files",), ["README.md"], "files must be a mapping of a string to a sha256"),
    (("encoder", "num_heads"), 0, "encoder.num_heads must be at least 1 and at most 64, got 0"),
    (("encoder", "hidden_size"), 8192, "encoder.hidden_size must be at least 1 and at most 4096, got 8192"),
    (("modality",), "depth", "modality must be one of joint, bone, motion, got 'depth'"),
    (("preprocessing", "max_frames"), -3, "preprocessing.max_frames must be a positive integer or null, got -3"),
    (("preprocessing", "max_frames"), "300", "preprocessing.max_frames must be a positive integer or null"),
    (("preprocessing",), KeyError, "preprocessing is missing; expected a mapping"),
    (("heads", "detector", "settings", "thetas"), [2.0], "heads.detector.settings.thetas must be"),
]


@pytest.mark.parametrize("path, value, message", BUNDLE_CHANGES, ids=[f"{'.'.join(p)}={v}" for p, v, _ in BUNDLE_CHANGES])
def test_a_bundle_with_a_wrong_model_json_field_is_one_line(trained, tmp_path, capsys, path, value, message):
    copy = _changed_bundle(trained, tmp_path, _set(path, value))
    with pytest.raises(BundleError, match="model.json"):
        load_model(copy)
    for command in (["recognize", "--model", copy, trained["actions"], "--split", "xview/test"],
                    ["embed", "--model", copy, trained["actions"], "--out", tmp_path / "f.npz"],
                    ["detect", "run", "--model", copy, trained["streams"], "--out", tmp_path / "detected"]):
        assert main(list(map(str, command))) == 2
        one_line_error(capsys, str(copy / "model.json"), message)


@pytest.mark.parametrize("file, change, message", [
    ("classifier.safetensors", lambda t: t.pop("weight"), "the tensor weight is missing"),
    ("classifier.safetensors", lambda t: t.update(weight=t["weight"][:, :5]), "the tensor weight has shape (20, 5)"),
    ("classifier.safetensors", lambda t: t.update(bias=t["bias"] * float("nan")), "weight bias holds NaN"),
    ("encoder.safetensors", lambda t: t.update({k: v.long() for k, v in list(t.items())[:1]}), "must be floating"),
    ("detector.safetensors", lambda t: t.update({"head.bias": t["head.bias"][:3]}), "the tensor head.bias has shape"),
])
def test_bundle_weights_of_the_wrong_shape_or_not_finite_are_refused(trained, tmp_path, capsys, file, change, message):
    from safetensors.torch import load_file, save_file

    from usdrl.data.fingerprint import file_sha256

    def edit(description):
        tensors = load_file(str(tmp_path / "model" / file))
        change(tensors)
        save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, str(tmp_path / "model" / file))
        description["files"][file] = file_sha256(tmp_path / "model" / file)

    copy = _changed_bundle(trained, tmp_path, edit)
    assert main(["detect", "run", "--model", str(copy), str(trained["streams"]), "--out", str(tmp_path / "d")]) == 2
    one_line_error(capsys, str(copy), message)


def _edited_checkpoint(trained, tmp_path, change):
    content = load_checkpoint(trained["checkpoint"])
    change(content)
    edited = tmp_path / "edited.pt"
    torch.save(content, edited)
    return edited


@pytest.mark.parametrize("change, message", [
    (lambda c: c["run"]["model"].update(alpha=2), "run.model.alpha must be at least 0 and at most 1, got 2"),
    (lambda c: c["run"]["model"].update(drop_path=5), "run.model.drop_path must be at least 0 and below 1, got 5"),
    (lambda c: c["encoder_config"].update(gap=100), "encoder_config.gap (100) must be at most"),
    (lambda c: c["run"]["augment"].update(views=1), "run.augment.views must be at least 2, got 1"),
    (lambda c: c["run"]["pretrain"].update(learning_rate=float("nan")), "run.pretrain.learning_rate must be a finite"),
    (lambda c: c.update(epoch=-1), "epoch must be an integer of at least 0, got -1"),
    (lambda c: c.update(epoch="one"), "epoch must be an integer of at least 0, got 'one'"),
    (lambda c: c["model"]["encoder.spatial_position"].fill_(float("nan")), "encoder.spatial_position holds NaN"),
    (lambda c: c["model"].update({"encoder.spatial_position": c["model"]["encoder.spatial_position"].long()}),
     "encoder.spatial_position must be floating-point, got int64"),
])
def test_export_refuses_a_checkpoint_with_bad_recorded_settings_or_weights(trained, tmp_path, capsys, change, message):
    edited = _edited_checkpoint(trained, tmp_path, change)
    out = tmp_path / "bundle"
    assert main(["export", "--checkpoint", str(edited), "--out", str(out), "--data", str(trained["actions"])]) == 2
    one_line_error(capsys, str(edited), message)
    assert not out.exists()


def test_a_huge_released_embedding_is_refused_before_the_model_is_built(tmp_path, capsys):
    released = tmp_path / "huge.pth.tar"
    torch.save({"state_dict": {"module.encoder.s_pos_embedding": torch.zeros(1, 50, 8192),
                               "module.encoder.s_embedding.0.weight": torch.zeros(8192, 192),
                               "module.encoder.t_embedding.0.weight": torch.zeros(8192, 150)}}, released)
    started = time.perf_counter()
    assert main(["export", "--checkpoint", str(released), "--out", str(tmp_path / "bundle")]) == 2
    line = one_line_error(capsys, str(released))
    assert time.perf_counter() - started < 5, line


@pytest.mark.parametrize("results, message", [
    ({"metrics": [1, 2]}, "metrics must be a mapping, got [1, 2]"),
    ({"provenance": "abc"}, "provenance must be a mapping, got 'abc'"),
    ({"settings": None}, "settings must be a mapping, got None"),
])
def test_a_probe_results_file_with_wrong_fields_is_refused(trained, tmp_path, capsys, results, message):
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps({**json.loads(trained["probe"].read_text()), **results}))
    shutil.copy(trained["probe"].with_suffix(".head.safetensors"), tmp_path / "probe.head.safetensors")
    assert main(["export", "--checkpoint", str(trained["checkpoint"]), "--out", str(tmp_path / "b"), "--probe", str(probe)]) == 2
    one_line_error(capsys, str(probe), message)


def test_a_one_dimensional_probe_head_is_refused(trained, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    shutil.copy(trained["probe"], tmp_path / "probe.json")
    head = load_file(str(trained["probe"].with_suffix(".head.safetensors")))
    save_file({**head, "weight": head["weight"][0].contiguous()}, str(tmp_path / "probe.head.safetensors"))
    assert main(["export", "--checkpoint", str(trained["checkpoint"]), "--out", str(tmp_path / "b"), "--probe",
                 str(tmp_path / "probe.json")]) == 2
    one_line_error(capsys, "probe.head.safetensors", "the tensor weight must be a head (classes, 32)")


@pytest.mark.parametrize("manifest, message", [
    ({"class_names": 5}, "class_names must be a list of strings, got 5"),
    ({"layout": "ntu25"}, "layout must be a mapping"),
    ({"num_samples": -1}, "num_samples must be an integer of at least 0"),
])
def test_a_manifest_with_wrong_fields_is_refused(trained, tmp_path, capsys, manifest, message):
    data = tmp_path / "actions"
    shutil.copytree(trained["actions"], data)
    content = json.loads((data / "manifest.json").read_text())
    (data / "manifest.json").write_text(json.dumps({**content, **manifest}))
    assert main(["recognize", "--model", str(trained["model"]), str(data), "--split", "xview/test"]) == 2
    one_line_error(capsys, str(data / "manifest.json"), message)


LAYOUT = """name: small
joint_names: [a, b, c]
bones: [[2, 1], [3, 2]]
center_joint: 1
shoulder_pair: [2, 3]
"""


@pytest.mark.parametrize("text, message", [
    (LAYOUT.replace("[a, b, c]", "abc"), "joint_names must be a list of names"),
    (LAYOUT + "num_persons: two\n", "num_persons must be an integer, got 'two'"),
    (LAYOUT.replace("[[2, 1], [3, 2]]", "[[1, 3], [2, 1], [3, 2]]"), "the bones form a cycle"),
    (LAYOUT + "name: again\n", "line 6: duplicate key 'name'"),
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(7))
     + "joint_names: [" + ", ".join(["*h"] * 10) + "]\n", "a YAML alias bomb"),
])
def test_a_bad_layout_file_is_one_line(tmp_path, text, message):
    (tmp_path / "layout.yaml").write_text(text)
    started = time.perf_counter()
    with pytest.raises(LayoutError, match="layout") as refused:
        load_layout(tmp_path / "layout.yaml")
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert time.perf_counter() - started < 2


def test_a_pickle_bomb_is_refused_quickly(tmp_path):
    nested = ["x"]
    for _ in range(8):
        nested = [nested] * 10  # 10^8 values in 8 shared lists
    path = tmp_path / "bomb.pkl"
    path.write_bytes(pickle.dumps({"annotations": nested}))
    assert path.stat().st_size < 400
    started = time.perf_counter()
    with pytest.raises(DataError, match="expand to more than"):
        load_pickle(path)
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize("text, overrides, message", [
    ("", [], "is empty"),
    ("model:\n  gap: 2\nmodel:\n  gap: 3\n", [], "line 3: duplicate key 'model'"),
    ("pipeline: [1, 2]\n", [], "pipeline must be a mapping of settings"),
    ("profile: [demo]\n", [], "profile must be the name of a profile"),
    ("pipeline:\n  runs:\n    one: 5\n", [], "pipeline.runs.one must be a mapping of settings"),
    ("{}\n", ["pretrain.learning_rate=nan"], "pretrain.learning_rate must be a finite number"),
    ("{}\n", ["pretrain.learning_rate=.inf"], "pretrain.learning_rate must be a finite number"),
    ("{}\n", ["pretrain.seed=-5"], "pretrain.seed must be at least 0, got -5"),
    ("{}\n", ["model.hidden_size=8192"], "model.hidden_size must be at least 1 and at most 4096"),
])
def test_bad_params_and_overrides_are_one_line(tmp_path, capsys, text, overrides, message):
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_params(tmp_path / "params.yaml", overrides=overrides)
    assert message in str(refused.value) and "\n" not in str(refused.value)
    arguments = [item for override in overrides for item in ("--set", override)]
    assert main(["pretrain", "--data", str(tmp_path), "--benchmark", "xview", "--params", str(tmp_path / "params.yaml"), *arguments,
                 "--out", str(tmp_path / "run")]) == 2
    one_line_error(capsys, message)


@pytest.mark.parametrize("subjects", ["0", "-1"])
def test_prepare_synthetic_refuses_no_subjects(tmp_path, capsys, subjects):
    assert main(["prepare", "synthetic", "--subjects", subjects, "--out", str(tmp_path / "data")]) == 2
    one_line_error(capsys, f"--subjects must be at least 1, got {subjects}")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("content", [b"\xff\xfe\x00binary\x00", b"S001C001P001R001A001\x00\n"])
def test_a_binary_missing_list_is_refused(tmp_path, capsys, content):
    rng = np.random.default_rng(0)
    (tmp_path / "raw").mkdir()
    write_skeleton_file(tmp_path / "raw/S001C001P001R001A001.skeleton", [[body] for body in standing_body(rng, 20)])
    (tmp_path / "missing.txt").write_bytes(content)
    assert main(["prepare", "ntu60", "--raw", str(tmp_path / "raw"), "--missing", str(tmp_path / "missing.txt"),
                 "--out", str(tmp_path / "data")]) == 2
    one_line_error(capsys, "missing-skeleton list", "missing.txt")


def test_a_full_disk_gives_one_line_and_leaves_no_dataset(tmp_path, capsys, monkeypatch):
    def no_space(descriptor, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    assert main(["prepare", "synthetic", "--subjects", "2", "--out", str(tmp_path / "data")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress lines
    assert last.startswith("usdrl prepare: error: ") and "not enough disk space for the dataset" in last, last
    assert ".npy" in last and not list(tmp_path.glob("**/*.tmp-*")) and not (tmp_path / "data/streams").exists()


def test_bundle_weights_are_readable_by_others_and_stale_temporary_folders_go(trained, tmp_path):
    stale = tmp_path / "bundle.tmp-999999999"  # no such process
    stale.mkdir()
    (stale / "encoder.safetensors").write_bytes(b"partial")
    running = tmp_path / f"bundle.tmp-{os.getppid()}"
    running.mkdir()
    export_bundle(trained["checkpoint"], tmp_path / "bundle")
    mode = stat.S_IMODE((tmp_path / "bundle/encoder.safetensors").stat().st_mode)
    assert mode == 0o666 & ~_umask() and mode & 0o044
    assert not stale.exists() and running.exists()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_the_valid_bundle_still_loads_and_embeds(trained):
    model = load_model(trained["model"])
    features = model.embed(np.random.default_rng(0).normal(size=(2, 3, 30, 25, 2)).astype(np.float32))["features"]
    assert features.shape == (2, 32) and np.isfinite(features).all()
