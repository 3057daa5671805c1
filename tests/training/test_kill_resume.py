"""Pretraining survives being killed: SIGKILL at random moments (many during a checkpoint write), resume,
and the run ends with no temporary files, every scheduled checkpoint, one log record per epoch and the
weights of an uninterrupted run, bit for bit."""

import json
import random
import subprocess
import sys
import time

import pytest
import torch
from conftest import TINY_MODEL

from usdrl.data.synthetic import SyntheticConfig, prepare_synthetic
from usdrl.settings.sections import ModelSection, PretrainSection
from usdrl.training.checkpoint_files import CheckpointError, load_checkpoint
from usdrl.training.loop import TrainingError
from usdrl.training.pretrain import pretrain

EPOCHS, CHECKPOINT_EVERY = 5, 2
SCHEDULED = ["checkpoint_0002.pt", "checkpoint_0004.pt", "checkpoint_0005.pt", "last.pt"]

# The child pretrains (resuming whatever is there). With "slow", every torch.save first creates its
# file empty, reports it and pauses before and after writing, so a kill often lands inside a write.
CHILD = """
import sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)  # fast on a busy 2-core machine; the same in every run, so the same arithmetic
data, out, slow = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
if slow:
    original_save = torch.save
    def slow_save(content, file, *arguments, **options):
        Path(file).touch()
        print("WRITING", file, flush=True)
        time.sleep(0.1)
        original_save(content, file, *arguments, **options)
        time.sleep(0.1)
    torch.save = slow_save
from usdrl.settings.params import ModelSection, PretrainSection
from usdrl.training.loop import TrainingError
from usdrl.training.pretrain import pretrain
print("STARTED", flush=True)
settings = PretrainSection(epochs=%d, batch_size=16, workers=0, device="cpu", checkpoint_every=%d, log_every=0,
                           milestones=(3,))
pretrain(data, "xview", out, ModelSection(hidden_size=16, num_layers=1), settings=settings, resume=True,
         progress=False)
print("DONE", flush=True)
""" % (EPOCHS, CHECKPOINT_EVERY)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    prepare_synthetic(root, SyntheticConfig(subjects=1, replications=1, training_subjects=(1,),
                                            streams_per_subject_camera=1))
    return root / "actions"  # xview train: 2 cameras x 20 actions = 40 clips


def _child(synthetic, out, slow: bool) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(synthetic), str(out), "1" if slow else "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _epochs_logged(out) -> list[int]:
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [record["epoch"] for record in records]


@pytest.mark.slow
def test_killed_pretraining_resumes_to_the_weights_of_an_uninterrupted_run(synthetic, tmp_path):
    reference = _child(synthetic, tmp_path / "reference", slow=False)
    killed_out = tmp_path / "killed"
    chooser = random.Random(7)
    left_behind = 0  # kills that left a temporary file (inside a write)
    for _ in range(5):
        child = _child(synthetic, killed_out, slow=True)
        # once the 2nd or 3rd checkpoint write of this child began (so the run moves on), after a short delay
        # that often lands inside that write, or a longer one that lands anywhere in training
        writes_to_wait = chooser.randint(2, 3)
        delay = chooser.choice([chooser.uniform(0.0, 0.25), chooser.uniform(0.0, 1.0)])
        while writes_to_wait > 0:
            line = child.stdout.readline()
            if not line:  # finished before the planned kill
                break
            writes_to_wait -= line.startswith("WRITING")
        time.sleep(delay)
        child.kill()  # SIGKILL
        child.communicate()
        left_behind += any(".tmp-" in path.name for path in (killed_out / "checkpoints").glob("*"))
    final = _child(synthetic, killed_out, slow=False)
    final_out, final_err = final.communicate(timeout=120)
    reference_out, reference_err = reference.communicate(timeout=120)
    assert final.returncode == 0, final_err
    assert reference.returncode == 0, reference_err
    assert left_behind >= 1  # the kills did hit checkpoint writes
    checkpoints = killed_out / "checkpoints"
    assert sorted(path.name for path in checkpoints.iterdir()) == SCHEDULED  # nothing .tmp- left
    assert not list(killed_out.glob("*.tmp-*"))
    assert _epochs_logged(killed_out) == list(range(1, EPOCHS + 1))
    assert _epochs_logged(tmp_path / "reference") == list(range(1, EPOCHS + 1))
    for name in SCHEDULED:
        ours = load_checkpoint(checkpoints / name)
        theirs = load_checkpoint(tmp_path / "reference" / "checkpoints" / name)
        assert ours["epoch"] == theirs["epoch"]
        for key, tensor in theirs["model"].items():
            assert torch.equal(ours["model"][key], tensor), (name, key)


def _settings(**changes) -> PretrainSection:
    values = dict(epochs=2, batch_size=16, workers=0, device="cpu", checkpoint_every=2, log_every=1, milestones=(9,))
    values.update(changes)
    return PretrainSection(**values)




def test_resume_writes_a_missing_numbered_checkpoint_and_cuts_the_log(synthetic, tmp_path, one_thread):
    out = tmp_path / "run"
    pretrain(synthetic, "xview", out, TINY_MODEL, settings=_settings(), progress=False)
    (out / "checkpoints" / "checkpoint_0002.pt").unlink()  # killed between the two writes (older order)
    with open(out / "log.jsonl", "a") as log:  # records of an epoch 3 that a kill cut short
        log.write(json.dumps({"epoch": 3, "step": 1, "loss": 1.0}) + "\n" + '{"epoch": 3, "lo')
    (out / "checkpoints" / "last.pt.tmp-999999999").write_bytes(b"")  # a dead writer's leftover
    (out / "checkpoints" / "checkpoint_0004.pt.tmp-999999999").write_bytes(b"half")
    pretrain(synthetic, "xview", out, TINY_MODEL, settings=_settings(epochs=3), resume=True, progress=False)
    names = sorted(path.name for path in (out / "checkpoints").iterdir())
    assert names == ["checkpoint_0002.pt", "checkpoint_0003.pt", "last.pt"]
    assert load_checkpoint(out / "checkpoints" / "checkpoint_0002.pt")["epoch"] == 2
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if "step" not in r] == [1, 2, 3]
    assert [r["epoch"] for r in records if "step" in r] == [1, 1, 2, 2, 3, 3]  # 2 steps per epoch, once each


def test_a_truncated_last_checkpoint_names_the_intact_one(synthetic, tmp_path, one_thread):
    out = tmp_path / "run"
    pretrain(synthetic, "xview", out, TINY_MODEL, settings=_settings(epochs=3), progress=False)
    last = out / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    intact = out / "checkpoints" / "checkpoint_0003.pt"
    intact.write_bytes(b"")  # damaged too: the older one is named
    with pytest.raises(CheckpointError, match=r"last.pt is not a readable checkpoint: it is a truncated .*newest intact "
                                              r"checkpoint is .*checkpoint_0002.pt: continue from it with --resume"):
        pretrain(synthetic, "xview", out, TINY_MODEL, settings=_settings(epochs=4), resume=True, progress=False)
    with pytest.raises(CheckpointError, match="does not exist"):
        pretrain(synthetic, "xview", out, TINY_MODEL, settings=_settings(epochs=4), resume=out / "missing.pt", progress=False)
    resumed = pretrain(synthetic, "xview", out, TINY_MODEL, settings=_settings(epochs=4),
                       resume=out / "checkpoints" / "checkpoint_0002.pt", progress=False)
    assert resumed["resumed_from"] == 2 and load_checkpoint(last)["epoch"] == 4


@pytest.mark.parametrize("seconds, saved", [(0.0, [1, 2, 3]), (1e9, [2, 3])])
def test_last_checkpoint_seconds_thins_out_last_pt_but_never_a_numbered_or_the_final_one(
        synthetic, tmp_path, one_thread, monkeypatch, seconds, saved):
    from usdrl.training.pretrain import Pretrainer

    epochs_saved = []
    original = Pretrainer.save
    monkeypatch.setattr(Pretrainer, "save", lambda self, done: (epochs_saved.append(done), original(self, done)))
    out = tmp_path / "run"
    pretrain(synthetic, "xview", out, TINY_MODEL, settings=_settings(epochs=3, last_checkpoint_seconds=seconds), progress=False)
    assert epochs_saved == saved and load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 3


def test_a_second_pretrain_into_a_held_run_folder_is_refused_and_a_killed_holder_blocks_nothing(synthetic, tmp_path,
                                                                                             one_thread):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", CHILD.replace(f"epochs={EPOCHS},", "epochs=10000,"),
                               str(synthetic), str(out), "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "checkpoints" / "last.pt").is_file():  # training, so it holds the lock
            assert holder.poll() is None and time.monotonic() < deadline, holder.stderr.read() if holder.poll() else ""
            time.sleep(0.05)
        run_info = (out / "run.json").read_text()
        with pytest.raises(TrainingError, match=rf"--out {out} is in use: another usdrl pretrain holds it"):
            pretrain(synthetic, "xview", out, TINY_MODEL, settings=_settings(epochs=3, seed=7), resume=True, progress=False)
        assert (out / "run.json").read_text() == run_info  # the refused run wrote nothing
    finally:
        holder.kill()
        holder.communicate()
    # the OS released the killed holder's lock: the run resumes (the lock file is no foreign entry)
    done = load_checkpoint(out / "checkpoints" / "last.pt")["epoch"]
    resumed = pretrain(synthetic, "xview", out, TINY_MODEL, resume=True, progress=False,
                       settings=PretrainSection(epochs=done + 1, batch_size=16, workers=0, device="cpu",
                                                checkpoint_every=CHECKPOINT_EVERY, log_every=0, milestones=(3,)))
    assert resumed["resumed_from"] == done and load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == done + 1


def test_a_resume_refuses_changed_settings_and_allows_a_longer_run_saved_differently(synthetic, tmp_path, one_thread):
    out = tmp_path / "run"
    pretrain(synthetic, "xview", out, TINY_MODEL, settings=_settings(epochs=1), progress=False)
    recorded = (out / "run.json").read_text()
    with pytest.raises(TrainingError) as refused:
        pretrain(synthetic, "xview", out, TINY_MODEL, settings=_settings(epochs=2, learning_rate=1e-3, seed=3), resume=True,
                 progress=False)
    message = str(refused.value)
    assert "pretrain.learning_rate 0.0005 (now 0.001)" in message and "pretrain.seed 0 (now 3)" in message
    assert str(out) in message and len(message.splitlines()) == 1
    with pytest.raises(TrainingError, match=r"model.hidden_size 16 \(now 32\)"):
        pretrain(synthetic, "xview", out, ModelSection(hidden_size=32, num_layers=1), settings=_settings(epochs=2),
                 resume=True, progress=False)
    assert (out / "run.json").read_text() == recorded
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 1
    # more epochs, and other saving and logging settings, continue the run
    resumed = pretrain(synthetic, "xview", out, TINY_MODEL, settings=_settings(epochs=2, checkpoint_every=1, log_every=0),
                       resume=True, progress=False)
    assert resumed["resumed_from"] == 1 and json.loads((out / "run.json").read_text())["pretrain"]["epochs"] == 2
