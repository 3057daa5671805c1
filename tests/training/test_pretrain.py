import json
import socket

import distributed_worker
import numpy as np
import pytest
import torch
import torch.multiprocessing as multiprocessing
from conftest import TINY_MODEL

from usdrl.cli.main import main
from usdrl.data.store import load_split
from usdrl.settings.sections import PretrainSection
from usdrl.training.checkpoint_files import load_checkpoint
from usdrl.training.loop import TrainingError
from usdrl.training.pretrain import epoch_batches, learning_rate_at, pretrain, training_loader


def _settings(**changes) -> PretrainSection:
    values = dict(epochs=4, batch_size=32, workers=0, device="cpu", checkpoint_every=2, log_every=0, milestones=(3,))
    values.update(changes)
    return PretrainSection(**values)


@pytest.mark.slow
def test_interrupted_run_resumes_exactly(synthetic, tmp_path):
    whole = pretrain(synthetic, "xview", tmp_path / "whole", TINY_MODEL, settings=_settings(), progress=False)
    pretrain(synthetic, "xview", tmp_path / "parts", TINY_MODEL, settings=_settings(epochs=2), progress=False)
    resumed = pretrain(synthetic, "xview", tmp_path / "parts", TINY_MODEL, settings=_settings(), resume=True,
                       progress=False)
    assert resumed["resumed_from"] == 2
    first = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")  # weights_only=True
    second = load_checkpoint(tmp_path / "parts" / "checkpoints" / "last.pt")
    for name, tensor in first["model"].items():
        assert torch.equal(tensor, second["model"][name]), name
    assert first["optimizer"]["state"][0]["step"] == second["optimizer"]["state"][0]["step"]
    assert whole["history"][-1]["total"] == pytest.approx(resumed["history"][-1]["total"], rel=1e-6)
    assert whole["history"][-1]["lr"] == pytest.approx(5e-5)  # x0.1 from the milestone
    log = [json.loads(line) for line in (tmp_path / "whole" / "log.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in log] == [1, 2, 3, 4]
    assert {"total", "similarity_i", "samples_per_second", "peak_memory_mb", "lr"} <= set(log[0])
    assert sorted(p.name for p in (tmp_path / "whole" / "checkpoints").iterdir()) == [
        "checkpoint_0002.pt", "checkpoint_0004.pt", "last.pt"]


@pytest.mark.slow
def test_pretraining_lowers_the_loss(synthetic, tmp_path):
    summary = pretrain(synthetic, "xview", tmp_path / "run", TINY_MODEL, settings=_settings(epochs=6, milestones=(10,)),
                       progress=False)
    totals = [record["total"] for record in summary["history"]]
    assert totals[-1] < totals[0]


@pytest.mark.slow
def test_non_finite_loss_stops_with_a_clear_message(synthetic, tmp_path, monkeypatch):
    import usdrl.training.pretrain

    pretrain(synthetic, "xview", tmp_path / "run", TINY_MODEL, settings=_settings(epochs=1), progress=False)
    monkeypatch.setattr(usdrl.training.pretrain, "learning_rate_at", lambda epoch, settings: float("inf"))  # epoch 2 diverges
    with pytest.raises(TrainingError, match="non-finite loss .* last good checkpoint: .*last.pt"):
        pretrain(synthetic, "xview", tmp_path / "run", TINY_MODEL, settings=_settings(epochs=2), resume=True,
                 progress=False)
    kept = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert kept["epoch"] == 1 and all(torch.isfinite(t).all() for t in kept["model"].values() if t.is_floating_point())


def test_schedule_and_batches():
    settings = PretrainSection()
    assert learning_rate_at(350, settings) == pytest.approx(5e-4)
    assert learning_rate_at(351, settings) == pytest.approx(5e-5)
    single = epoch_batches(100, 20, epoch=3, seed=0, rank=0, world_size=1)
    two = [epoch_batches(100, 10, epoch=3, seed=0, rank=r, world_size=2) for r in range(2)]
    for k, batch in enumerate(single):
        assert list(batch) == list(two[0][k]) + list(two[1][k])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_processes_give_the_loss_and_gradients_of_one_with_twice_the_batch(tmp_path):
    batch = 6
    multiprocessing.spawn(distributed_worker.step_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "result.pt"), batch),
                          nprocs=2, join=True)
    distributed = torch.load(tmp_path / "result.pt", weights_only=False)
    loss, gradients = distributed_worker.loss_and_gradients(distributed_worker.make_views(2 * batch), distributed=False)
    assert distributed["loss"] == pytest.approx(loss, rel=1e-5)
    assert set(gradients) == set(distributed["gradients"])
    # Biases feeding a BatchNorm, and the last projector bias, have zero true gradient (the loss is
    # invariant to them): only rounding noise is left there, hence an absolute tolerance on the scale.
    scale = max(gradient.abs().max().item() for gradient in gradients.values())
    for name, gradient in gradients.items():
        torch.testing.assert_close(distributed["gradients"][name], gradient, rtol=1e-3, atol=1e-4 * scale, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [0.5, 1.0])  # alpha 1: the DSA branch is skipped, its weights get no gradient
def test_torchrun_style_pretraining_on_two_processes(synthetic, tmp_path, alpha):
    multiprocessing.spawn(distributed_worker.pretrain_worker,
                          args=(2, _free_port(), str(synthetic), str(tmp_path / "run"), alpha), nprocs=2, join=True)
    content = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert content["epoch"] == 1 and content["run"]["world_size"] == 2
    assert content["encoder_config"]["alpha"] == alpha


def test_cli_pretrain_with_params_and_bad_input(synthetic, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./params.yaml: the package defaults
    code = main(["pretrain", "--data", str(synthetic), "--benchmark", "xview", "--out", str(tmp_path / "run"), "--quiet",
                 "--epochs", "1", "--batch-size", "16", "--device", "cpu",
                 "--set", "model.hidden_size=16", "--set", "model.num_layers=1", "--set", "pretrain.workers=0"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["final"]["epoch"] == 1
    assert main(["pretrain", "--data", str(synthetic), "--benchmark", "xsub_typo", "--out", str(tmp_path / "r2")]) == 2
    assert "has no split xsub_typo/train" in capsys.readouterr().err
    assert main(["pretrain", "--data", str(synthetic), "--benchmark", "xview", "--out", str(tmp_path / "r3"),
                 "--set", "pretrain.epoch=3"]) == 2
    error = capsys.readouterr().err
    assert "unknown key" in error and "pretrain.epoch" in error


def test_short_clips_that_are_never_cropped_in_time_give_a_warning():
    from usdrl.training.pretrain import warn_if_crops_never_happen

    class Split:
        root = "data/short"
        num_frames = np.array([5, 20, 28, 40, 90])

        def __len__(self):
            return 5

    with pytest.warns(UserWarning, match="augment.minimum_crop=64 frames, so they are never cropped"):
        assert warn_if_crops_never_happen(Split(), 64) == 0.8
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_crops_never_happen(Split(), 8) == 0.2


def _contents(folder):
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_out_is_a_new_or_empty_folder_or_our_run_to_resume(synthetic, tmp_path, monkeypatch, capsys, one_thread):
    from usdrl.training.resume import check_run_folder

    user = tmp_path / "user"  # someone's folder that happens to hold files with our names
    user.mkdir()
    for name, text in {"log.jsonl": "my log\n", "run.json": '{"mine": 1}', "notes.txt": "notes",
                       "backup.tmp-999999": "a backup"}.items():
        (user / name).write_text(text)
    before = _contents(user)
    for resume in (False, True):
        with pytest.raises(TrainingError, match=r"--out .*user is not empty and not a run of usdrl pretrain \(it holds "
                                                r"backup.tmp-999999, log.jsonl, notes.txt, run.json\); nothing was "
                                                r"changed"):
            pretrain(synthetic, "xview", user, TINY_MODEL, settings=_settings(epochs=1), resume=resume, progress=False)
    assert _contents(user) == before
    with pytest.raises(TrainingError, match="is a file"):
        check_run_folder(user / "notes.txt", resume=False)

    run = tmp_path / "run"  # empty but for a dead writer's temporary file: a new run, the leftover removed
    run.mkdir()
    (run / "run.json.tmp-999999999").write_text("{")
    pretrain(synthetic, "xview", run, TINY_MODEL, settings=_settings(epochs=1), progress=False)
    assert sorted(_contents(run)) == ["checkpoints/checkpoint_0001.pt", "checkpoints/last.pt", "log.jsonl", "run.json"]
    finished = _contents(run)
    with pytest.raises(TrainingError, match=r"run holds a pretraining run already; resume it with --resume, or "
                                            r"choose a new --out"):
        pretrain(synthetic, "xview", run, TINY_MODEL, settings=_settings(epochs=2), progress=False)
    assert _contents(run) == finished  # log and checkpoints untouched

    # resuming our run keeps what is not ours, even names that look temporary
    (run / "notes.txt").write_text("notes")
    (run / "backup.tmp-999999").write_text("a backup")
    (run / "checkpoints" / "notes.pt.tmp-999999999").write_text("kept")
    pretrain(synthetic, "xview", run, TINY_MODEL, settings=_settings(epochs=2), resume=True, progress=False)
    assert {"notes.txt", "backup.tmp-999999", "checkpoints/notes.pt.tmp-999999999"} <= set(_contents(run))
    assert [json.loads(line)["epoch"] for line in (run / "log.jsonl").read_text().splitlines()] == [1, 2]

    monkeypatch.chdir(user)  # --out . in a folder that is not a run
    assert main(["pretrain", "--data", str(synthetic), "--benchmark", "xview", "--out", ".", "--quiet", "--epochs", "1",
                 "--batch-size", "16", "--device", "cpu", "--set", "model.hidden_size=16"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("usdrl pretrain: error: --out . is not empty") and len(error.strip().splitlines()) == 1
    assert _contents(user) == before


def test_a_batch_larger_than_the_split_is_refused_before_the_model_is_built(synthetic, tmp_path, monkeypatch, capsys):
    from usdrl.settings.sections import ConfigError
    from usdrl.training import pretrain as pretrain_module

    def build_model(*arguments):
        raise AssertionError("the model was built before the batch size was checked")

    monkeypatch.setattr(pretrain_module, "build_model", build_model)
    with pytest.raises(ConfigError, match="has 120 samples, fewer than one batch of 356; lower --batch-size"):
        pretrain(synthetic, "xview", tmp_path / "run", TINY_MODEL, settings=_settings(batch_size=356), progress=False)
    monkeypatch.chdir(tmp_path)  # no ./params.yaml: the released batch of 356
    assert main(["pretrain", "--data", str(synthetic), "--benchmark", "xview", "--out", "run2", "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert "fewer than one batch of 356" in error and len(error.strip().splitlines()) == 1


def test_a_device_or_precision_this_machine_lacks_is_a_clear_error(synthetic, tmp_path, monkeypatch, capsys):
    from usdrl.settings.sections import ConfigError
    from usdrl.training.runtime import autocast_settings, resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a GPU machine
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    for name in ("cuda", "cuda:0"):
        with pytest.raises(ConfigError, match=f"device '{name}': no CUDA GPU is available here"):
            resolve_device(name)
    for name in ("tpu", "xyz", "meta"):
        with pytest.raises(ConfigError, match=f"device '{name}' is not one of auto, cpu, cuda, cuda:N"):
            resolve_device(name)
    with pytest.raises(ConfigError, match="precision 'fp16' is not available on cpu"):
        autocast_settings(torch.device("cpu"), "fp16")
    assert autocast_settings(torch.device("cpu"), "auto") == (None, False)  # float32 on a CPU (bf16 on request)
    assert autocast_settings(torch.device("cpu"), "bf16") == (torch.bfloat16, False)
    monkeypatch.chdir(tmp_path)
    common = ["pretrain", "--data", str(synthetic), "--benchmark", "xview", "--out", "run", "--batch-size", "16"]
    for extra, message in ((["--device", "cuda"], "no CUDA GPU is available"),
                           (["--device", "cpu", "--precision", "fp16"], "fp16 needs a CUDA GPU")):
        assert main([*common, *extra]) == 2
        error = capsys.readouterr().err
        assert message in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_training_batches_hold_the_stored_valid_frames_with_any_number_of_workers(synthetic):
    split = load_split(synthetic, "xview", "train")
    batches = epoch_batches(len(split), 16, 0, 0, 0, 1)[:3]
    loaded = {workers: list(training_loader(split, batches, workers, pin_memory=False)) for workers in (0, 2)}
    for positions, (x, frames), (x2, frames2) in zip(batches, loaded[0], loaded[2]):
        assert torch.equal(x, x2) and torch.equal(frames, frames2)
        assert frames.tolist() == [int(split.num_frames[p]) for p in positions]
        assert x.shape[2] == max(int(frames.max()), 1)
        for row, position in enumerate(positions):  # the stored sample's valid frames, zeros after them
            length = max(int(frames[row]), 1)
            stored = torch.from_numpy(split.sample(position))
            assert torch.equal(x[row, :, :length], stored[:, :length]) and not x[row, :, length:].any()
