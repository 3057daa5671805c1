"""No code runs from a checkpoint file: every entry point loads with weights_only=True, refuses what
needs an unsafe load (with the convert command), and reports damaged or wrong files in one line."""

import json

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, one_line_error

from usdrl.cli.main import main
from usdrl.data.synthetic import SyntheticConfig, prepare_synthetic
from usdrl.evaluate.protocols import run_retrieval
from usdrl.nn.encoders import encoder_record
from usdrl.settings.params import load_params
from usdrl.settings.sections import PretrainSection
from usdrl.skeleton import ntu25_layout
from usdrl.training.checkpoint_files import CheckpointError, UnsafeCheckpointError, load_checkpoint
from usdrl.training.pretrain import pretrain
from usdrl.training.released_checkpoints import load_released

SMALL = ["--set", "model.hidden_size=16", "--set", "model.num_layers=1"]


class Malicious:
    """Unpickling this runs code: it writes ``marker``."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code from the checkpoint ran')",)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    prepare_synthetic(root, SyntheticConfig(subjects=2, replications=1, training_subjects=(1,),
                                            streams_per_subject_camera=1))
    return root  # actions: 80 xview training clips; streams: untrimmed, for detection


@pytest.fixture(scope="module")
def bone_run(synthetic, tmp_path_factory):
    """A checkpoint of a tiny pretraining on bones (1 epoch)."""
    out = tmp_path_factory.mktemp("bone_run")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pretrain(synthetic / "actions", "xview", out, TINY_MODEL,
                 settings=PretrainSection(epochs=1, batch_size=16, workers=0, device="cpu", log_every=0,
                                          modality="bone"), progress=False)
    finally:
        torch.set_num_threads(previous)
    return out / "checkpoints" / "last.pt"


def _command(name, synthetic, checkpoint, tmp_path) -> list[str]:
    actions = ["--data", str(synthetic / "actions"), "--benchmark", "xview", "--quiet", *SMALL,
               "--set", f"evaluation.cache_dir={tmp_path / 'cache'}", "--set", "evaluation.device=cpu"]
    return {
        "probe": ["probe", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "probe.json"), *actions],
        "retrieve": ["retrieve", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "knn.json"), *actions],
        "finetune": ["finetune", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "semi.json"),
                     "--fraction", "0.5", "--seeds", "0", *actions],
        "detect train": ["detect", "train", "--data", str(synthetic / "streams"), "--benchmark", "xsub", "--quiet",
                         "--checkpoint", str(checkpoint), "--out", str(tmp_path / "detection"), *SMALL,
                         "--set", "evaluation.device=cpu"],
        "pretrain --resume": ["pretrain", "--data", str(synthetic / "actions"), "--benchmark", "xview", "--quiet",
                              "--out", str(tmp_path / "run"), "--resume", str(checkpoint), "--epochs", "1",
                              "--batch-size", "16", "--device", "cpu", "--set", "pretrain.workers=0", *SMALL],
    }[name]


ENTRY_POINTS = ["probe", "retrieve", "finetune", "detect train", "pretrain --resume"]


@pytest.fixture
def outside_the_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./params.yaml: the package defaults and the --set options


def test_the_malicious_file_does_run_code_when_loaded_unsafely(tmp_path):
    evil, marker = tmp_path / "evil.pt", tmp_path / "marker"
    torch.save({"model": Malicious(marker)}, evil)
    torch.load(evil, weights_only=False)  # what the code did before: the marker proves the test can fail
    assert marker.read_text() == "code from the checkpoint ran"


@pytest.mark.parametrize("entry_point", ENTRY_POINTS + ["convert-checkpoint", "load_released"])
def test_no_entry_point_runs_code_from_a_checkpoint(entry_point, synthetic, tmp_path, capsys, outside_the_checkout):
    evil, marker = tmp_path / "evil.pt", tmp_path / "marker"
    torch.save({"encoder_config": encoder_record(TINY_MODEL, ntu25_layout()),
                "model": Malicious(marker),
                "epoch": 1, "optimizer": {}, "scaler": {}, "rng": {}}, evil)
    if entry_point == "load_released":
        with pytest.raises(UnsafeCheckpointError, match="evil.pt holds Python objects .*builtins.exec.* refused"):
            load_released(evil)
    elif entry_point == "convert-checkpoint":
        assert main(["convert-checkpoint", str(evil), "--out", str(tmp_path / "new.pt")]) == 2
        one_line_error(capsys, "refusing to convert", "evil.pt", "--trust-this-file")
        assert not (tmp_path / "new.pt").exists()
    else:
        assert main(_command(entry_point, synthetic, evil, tmp_path)) == 2
        one_line_error(capsys, f"{evil} holds Python objects (builtins.exec)", "refused",
                        f"usdrl convert-checkpoint {evil} --out")
    assert not marker.exists()


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, bone_run):
    folder = tmp_path_factory.mktemp("bad")
    (folder / "text.pt").write_text("epoch 1 loss 0.5\nthese are notes, not weights\n")
    (folder / "empty.pt").write_bytes(b"")
    content = bone_run.read_bytes()
    (folder / "truncated.pt").write_bytes(content[:len(content) // 2])
    (folder / "directory.pt").mkdir()
    layout = {"name": "coco", "joint_names": [f"j{i}" for i in range(17)], "bones": [], "center_joint": 1,
              "shoulder_pair": [2, 3], "num_persons": 1, "num_coordinates": 3}
    torch.save({"encoder_config": {**encoder_record(TINY_MODEL, ntu25_layout()),
                                   "num_joints": 17, "num_persons": 1}, "layout": layout, "model": {}, "epoch": 1, "optimizer": {},
                "scaler": {}, "rng": {}}, folder / "other_layout.pt")
    return folder


BAD = {"text.pt": "it is text (", "empty.pt": "is an empty file (0 bytes)",
       "truncated.pt": "it is a truncated or damaged PyTorch archive", "directory.pt": "is a directory",
       "other_layout.pt": "other_layout.pt"}


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
@pytest.mark.parametrize("name", list(BAD))
def test_a_wrong_file_as_checkpoint_gives_one_line_and_exit_2(entry_point, name, synthetic, bad_files, tmp_path,
                                                              capsys, outside_the_checkout):
    checkpoint = bad_files / name
    assert main(_command(entry_point, synthetic, checkpoint, tmp_path)) == 2
    line = one_line_error(capsys, str(checkpoint), BAD[name])
    if name == "other_layout.pt":
        assert ("does not fit this dataset" in line if entry_point != "pretrain --resume"
                else "num_joints 17 (this run: 25)" in line)


def test_an_old_checkpoint_is_refused_with_the_convert_command_and_converts(bone_run, synthetic, tmp_path, capsys,
                                                                           outside_the_checkout):
    content = load_checkpoint(bone_run)
    np.random.seed(3)
    content["rng"]["numpy"] = np.random.get_state()  # as before: a tuple holding an ndarray
    content["run"]["data"]["root"] = synthetic / "actions"  # and a Path
    old, new = tmp_path / "old.pt", tmp_path / "new.pt"
    torch.save(content, old)
    with pytest.raises(UnsafeCheckpointError, match=f"usdrl convert-checkpoint {old} --out .*old.safe.pt "
                                                    f"--trust-this-file"):
        load_checkpoint(old)
    assert main(_command("retrieve", synthetic, old, tmp_path)) == 2
    one_line_error(capsys, "numpy", "convert-checkpoint")
    assert main(["convert-checkpoint", str(old), "--out", str(new)]) == 2
    one_line_error(capsys, "without --trust-this-file")
    assert main(["convert-checkpoint", str(old), "--out", str(new), "--trust-this-file"]) == 0
    capsys.readouterr()
    converted = load_checkpoint(new)
    np.random.set_state(converted["rng"]["numpy"])
    assert np.random.random() == np.random.RandomState(3).random()
    assert converted["run"]["data"]["root"] == str(synthetic / "actions")
    assert all(torch.equal(converted["model"][k], v) for k, v in content["model"].items())
    assert main(_command("retrieve", synthetic, new, tmp_path)) == 0
    assert main(["convert-checkpoint", str(new), "--out", str(tmp_path / "again.pt")]) == 2
    one_line_error(capsys, "already loads safely")


def test_our_checkpoints_load_safely(bone_run):
    content = torch.load(bone_run, weights_only=True)
    assert content["epoch"] == 1 and isinstance(content["rng"]["numpy"]["state"]["key"], list)


def test_evaluation_takes_modality_and_backbone_from_our_checkpoint_and_refuses_others(bone_run, synthetic, tmp_path,
                                                                                      capsys, outside_the_checkout):
    params = load_params(None, overrides=["model.hidden_size=16", "model.num_layers=1", "retrieval.k=[1]",
                                          "evaluation.device=cpu", f"evaluation.cache_dir={tmp_path / 'cache'}",
                                          "model.backbone=sttr"])  # the params' backbone is not a request
    run_retrieval(synthetic / "actions", "xview", bone_run, tmp_path / "knn.json", params)
    settings = json.loads((tmp_path / "knn.json").read_text())["settings"]
    assert settings["modality"] == "bone" and settings["model"]["backbone"] == "dste"
    with pytest.raises(CheckpointError, match="pretrained on bone, but modality joint was asked"):
        run_retrieval(synthetic / "actions", "xview", bone_run, tmp_path / "x.json", params, modality="joint")
    with pytest.raises(CheckpointError, match="holds a dste encoder, but backbone sttr was asked"):
        run_retrieval(synthetic / "actions", "xview", bone_run, tmp_path / "x.json", params, backbone="sttr")
    assert main([*_command("probe", synthetic, bone_run, tmp_path), "--modality", "motion"]) == 2
    one_line_error(capsys, str(bone_run), "bone", "motion")
    assert main([*_command("pretrain --resume", synthetic, bone_run, tmp_path), "--set", "model.backbone=sttr"]) == 2
    one_line_error(capsys, str(bone_run), "backbone 'dste' (this run: 'sttr')")


def _not_checkpoints(folder, marker):
    """Files that are no PyTorch checkpoint at all, by kind: (path, words the error must use)."""
    import gzip
    import pickle

    np.save(folder / "weights.npy", np.zeros((4, 4), dtype=np.float32))
    (folder / "program.bin").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(200))
    (folder / "archive.gz").write_bytes(gzip.compress(b"some text"))
    (folder / "random.bin").write_bytes(b"\x01" + np.random.default_rng(0).bytes(4095))
    (folder / "config.json").write_text('{"a":1}')
    (folder / "plain.pkl").write_bytes(pickle.dumps(Malicious(marker), protocol=5))
    np.savez(folder / "arrays.npz", x=np.zeros(3))
    return {"weights.npy": "a NumPy .npy file", "program.bin": "an ELF executable",
            "archive.gz": "gzip-compressed data",
            "random.bin": "binary data of no known kind", "config.json": "text (7 bytes, starting '{\"a\":1}')",
            "plain.pkl": "a Python pickle", "arrays.npz": "a zip archive (x.npy; a NumPy .npz?)"}


def test_a_file_that_is_no_pytorch_checkpoint_is_named_for_what_it_is_without_convert_advice(
        synthetic, tmp_path, capsys, outside_the_checkout):
    marker = tmp_path / "marker"
    for name, kind in _not_checkpoints(tmp_path, marker).items():
        path = tmp_path / name
        with pytest.raises(CheckpointError) as raised:
            load_checkpoint(path)
        assert not isinstance(raised.value, UnsafeCheckpointError), raised.value
        assert f"{path} is not a readable checkpoint: it is {kind}" in str(raised.value)
        assert str(raised.value).endswith("not a PyTorch checkpoint") and "convert" not in str(raised.value)
        assert main(_command("probe", synthetic, path, tmp_path)) == 2
        line = one_line_error(capsys, kind, "not a PyTorch checkpoint")
        assert "convert" not in line
        assert main(["convert-checkpoint", str(path), "--out", str(tmp_path / "new.pt"), "--trust-this-file"]) == 2
        one_line_error(capsys, kind, "nothing to convert")
    assert not marker.exists() and not (tmp_path / "new.pt").exists()


def test_torch_files_needing_an_unsafe_load_get_the_convert_advice_without_a_warning(tmp_path, capsys, synthetic,
                                                                                   outside_the_checkout):
    import warnings

    marker = tmp_path / "marker"
    legacy, protocol5 = tmp_path / "legacy.pt", tmp_path / "protocol5.pt"
    torch.save({"model": Malicious(marker)}, legacy, _use_new_zipfile_serialization=False)
    torch.save({"model": Malicious(marker)}, protocol5, pickle_protocol=5)
    for path in (legacy, protocol5):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(UnsafeCheckpointError, match=f"usdrl convert-checkpoint {path} --out"):
                load_checkpoint(path)
        assert not caught, [str(warning.message) for warning in caught]  # torch's pickle-protocol warning
        assert main(_command("probe", synthetic, path, tmp_path)) == 2
        one_line_error(capsys, f"{path} holds Python objects", "convert-checkpoint")
    assert not marker.exists()


@pytest.mark.parametrize("entry_point", ["probe", "finetune", "detect train"])
@pytest.mark.parametrize("change, message", [
    ({"hidden_size": -3}, "encoder_config.hidden_size must be at least 1 and at most 4096, got -3"),
    ({"hidden_size": 10**7}, "encoder_config.hidden_size must be at least 1 and at most 4096, got 10000000"),
    ({"hidden_size": 8192}, "encoder_config.hidden_size must be at least 1 and at most 4096, got 8192"),
    ({"hidden_size": 32}, r"needs encoder.spatial_position of shape (1, 50, 32), but the file holds (1, 50, 16)"),
    ({"backbone": "xyz"}, "encoder_config.backbone must be one of dste, sttr, got 'xyz'"),
    ({"hidden_size": "abc"}, "encoder_config.hidden_size must be an integer, got 'abc'"),
    ({"alpha": 2}, "encoder_config.alpha must be at least 0 and at most 1, got 2"),
    ({"drop_path": 5}, "encoder_config.drop_path must be at least 0 and below 1, got 5"),
    ({"gap": 100}, "encoder_config.gap (100) must be at most encoder_config.clip_frames (64)"),
    ({"num_heads": 0}, "encoder_config.num_heads must be at least 1 and at most 64, got 0"),
    ({"num_layers": 3}, "config says 3 layers, but the file holds the weights of 1"),
    ({"num_heads": 3}, "encoder_config.hidden_size (16) must be even and a multiple of encoder_config.num_heads (3)"),
    ({"width": 3}, "has an encoder config this version does not know: width"),
])
def test_a_recorded_encoder_config_is_checked_against_the_stored_weights(entry_point, change, message, bone_run,
                                                                         synthetic, tmp_path, capsys,
                                                                         outside_the_checkout):
    content = load_checkpoint(bone_run)
    content["encoder_config"].update(change)
    edited = tmp_path / "edited.pt"
    torch.save(content, edited)
    assert main(_command(entry_point, synthetic, edited, tmp_path)) == 2  # never a 400 TB allocation
    one_line_error(capsys, str(edited), message)


def test_an_existing_folder_as_results_file_or_a_file_as_proposals_folder_is_refused(synthetic, tmp_path, capsys,
                                                                                   outside_the_checkout):
    (tmp_path / "probe.json").mkdir()
    assert main(_command("probe", synthetic, "random", tmp_path)) == 2
    one_line_error(capsys, "probe.json is a folder; the results go to a file")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["probe.json"]  # no probe.json.tmp-PID left
    (tmp_path / "proposals.txt").write_text("1,0,10,0.5\n")
    assert main(["detect", "evaluate", "--proposals", str(tmp_path / "proposals.txt"), "--data",
                 str(synthetic / "streams"), "--benchmark", "xsub"]) == 2
    one_line_error(capsys, "proposals.txt is a file; pass the folder of <video>.txt proposal files")
