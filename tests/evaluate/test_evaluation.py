import json

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL
from sklearn.neighbors import KNeighborsClassifier

from usdrl.cli.main import main
from usdrl.evaluate.ensemble import ensemble_scores
from usdrl.evaluate.finetune import labelled_subset, layer_parameter_groups
from usdrl.evaluate.linear import train_linear_probe, validation_split
from usdrl.evaluate.protocols import run_finetune, run_linear_probe, run_retrieval
from usdrl.evaluate.retrieval import knn_predict
from usdrl.nn.encoders import SkeletonModel, encoder_record
from usdrl.settings.params import load_params
from usdrl.settings.sections import ModelSection, ProbeSection
from usdrl.skeleton import ntu25_layout


def _params(tmp_path, *extra):
    return load_params(None, overrides=["model.hidden_size=16", "model.num_layers=1", "probe.epochs=30",
                                        f"evaluation.cache_dir={tmp_path / 'cache'}", "evaluation.device=cpu",
                                        "probe.learning_rates={default: 0.5}", *extra])


@pytest.mark.parametrize("k", [1, 5])
def test_knn_matches_scikit_learn(k):
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(300, 24)), rng.normal(size=(80, 24))
    labels = rng.integers(0, 7, size=300)
    ours = knn_predict(train, labels, test, k=k, chunk_size=17)
    reference = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(train, labels).predict(test)
    assert (ours == reference).mean() >= 0.98  # vote ties may break differently; k=1 is exact
    if k == 1:
        assert np.array_equal(ours, reference)


def test_linear_probe_learns_and_reports_the_last_epoch():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(5, 32)) * 3
    labels = rng.integers(0, 5, size=600)
    features = centres[labels] + rng.normal(size=(600, 32))
    result = train_linear_probe(features[:400], labels[:400], features[400:], labels[400:], 5,
                                ProbeSection(epochs=20, milestones=(15,), batch_size=64), learning_rate=0.1)
    metrics, history = result["metrics"], result["history"]
    assert metrics["top1"] == history[-1]["test_accuracy"] > 0.9
    assert metrics["best_test_accuracy_over_epochs_NOT_a_result"] >= metrics["top1"]
    assert history[15]["lr"] == pytest.approx(0.01)
    assert result["test_scores"].shape == (200, 5)


def test_validation_holds_out_whole_subjects():
    subjects = np.repeat(np.arange(10), 5)
    kept, held_out = validation_split(np.zeros(50, int), subjects, 0.2, seed=0)
    assert len(held_out) == 10 and not set(subjects[kept]) & set(subjects[held_out])


def test_probe_leaves_the_encoder_unchanged_records_provenance_and_reuses_cached_features(synthetic, tmp_path,
                                                                                           monkeypatch):
    from usdrl.evaluate import protocols
    from usdrl.settings.sections import PretrainSection
    from usdrl.training.pretrain import pretrain

    pretrain(synthetic, "xview", tmp_path / "run", TINY_MODEL,
             settings=PretrainSection(epochs=3, batch_size=32, workers=0, device="cpu", log_every=0), progress=False)
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    opened = []  # the encoder the probe really uses, and its state (parameters and buffers) as loaded

    def observed_open_encoder(*args, **kwargs):
        encoder, recorded = open_encoder(*args, **kwargs)
        opened.append((encoder, {k: v.detach().clone() for k, v in encoder.state_dict().items()}))
        return encoder, recorded

    open_encoder = protocols.open_encoder
    monkeypatch.setattr(protocols, "open_encoder", observed_open_encoder)
    params = _params(tmp_path, "probe.validation_fraction=0.5")
    result = run_linear_probe(synthetic, "xview", checkpoint, tmp_path / "probe.json", params)
    (encoder, before), = opened
    after = encoder.state_dict()
    assert any(k.endswith("running_mean") for k in before) and any(k.endswith("num_batches_tracked") for k in before)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k].cpu()) for k in before), \
        [k for k in before if not torch.equal(before[k], after[k].cpu())]  # weights and BatchNorm statistics
    assert result["metrics"]["encoder_unchanged"]
    written = json.loads((tmp_path / "probe.json").read_text())
    assert written["protocol"] == "linear_probe" and written["provenance"]["checkpoint_sha256"]
    assert written["provenance"]["data_manifest_sha256"] and written["settings"]["probe"]["learning_rate"] == 0.5
    assert "selected_epoch_by_validation" in written["metrics"] and "elapsed_seconds" in written
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2  # train and test features cached
    run_linear_probe(synthetic, "xview", checkpoint, tmp_path / "again.json", params)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2  # reused, not recomputed
    retrieval = run_retrieval(synthetic, "xview", checkpoint, tmp_path / "knn.json", _params(tmp_path, "retrieval.k=[1, 3]"))
    assert set(retrieval["metrics"]) == {"knn1", "knn3"}


def test_finetune_subset_is_fixed_by_seed_and_saved(synthetic, tmp_path):
    assert np.array_equal(labelled_subset(1000, 0.01, 3), labelled_subset(1000, 0.01, 3))
    assert len(labelled_subset(1000, 0.1, 0)) == 100
    params = _params(tmp_path, "finetune.epochs=2", "finetune.warmup_epochs=1", "finetune.batch_size=8")
    result = run_finetune(synthetic, "xview", "random", tmp_path / "semi.json", params, fraction=0.2, seeds=[0, 1])
    assert result["metrics"]["seeds"] == 2 and 0 <= result["metrics"]["top1"] <= 1
    written = json.loads((tmp_path / "semi.json").read_text())
    assert len(written["metrics"]["labelled_positions"]["0"]) == 24  # 20% of 120 training clips
    model = SkeletonModel(ModelSection(hidden_size=16, num_layers=2), num_classes=5)
    scales = sorted({group["lr_scale"] for group in layer_parameter_groups(model, params.finetune)})
    assert scales == pytest.approx([0.8 ** 3, 0.8 ** 2, 0.8, 1.0])



def test_finetune_from_a_checkpoint_draws_each_seeds_head_from_that_seed(synthetic, tmp_path, monkeypatch, one_thread):
    from usdrl.evaluate import protocols

    section = TINY_MODEL
    checkpoint = tmp_path / "ours.pt"
    torch.manual_seed(0)
    torch.save({"encoder_config": encoder_record(section, ntu25_layout()), "layout": ntu25_layout().to_dict(),
                "model": SkeletonModel(section).state_dict()}, checkpoint)
    heads = []  # the head of each seed's model as opened, before fine-tuning

    def observed_open_encoder(*args, **kwargs):
        encoder, recorded = open_encoder(*args, **kwargs)
        heads.append(encoder.head.weight.detach().clone())
        return encoder, recorded

    open_encoder = protocols.open_encoder
    monkeypatch.setattr(protocols, "open_encoder", observed_open_encoder)
    params = _params(tmp_path, "finetune.epochs=2", "finetune.warmup_epochs=1", "finetune.batch_size=8")
    runs = []
    for name, seeds, earlier in (("first", [0, 1], 11), ("again", [1, 0], 22)):
        torch.manual_seed(earlier)  # whatever the process drew before leaves the heads alone
        heads.clear()
        result = run_finetune(synthetic, "xview", checkpoint, tmp_path / f"{name}.json", params, fraction=0.2,
                              seeds=seeds)
        runs.append(({run["seed"]: run for run in result["metrics"]["per_seed"]}, dict(zip(seeds, heads))))
    (first, first_heads), (again, again_heads) = runs
    assert first == again  # per seed: accuracy, labelled count and every epoch's loss, to the bit
    assert all(torch.equal(first_heads[seed], again_heads[seed]) for seed in (0, 1))
    assert not torch.equal(first_heads[0], first_heads[1])  # another seed, another head

def test_ensemble_sums_scores_and_rejects_mismatches(tmp_path):
    labels = np.array([0, 1, 2, 1])
    one_hot = np.eye(3)[labels]
    np.savez(tmp_path / "a.npz", scores=one_hot * 0.6 + np.eye(3)[[1, 1, 1, 1]] * 0.7, labels=labels)
    np.savez(tmp_path / "b.npz", scores=one_hot * 0.6 + np.eye(3)[[2, 2, 0, 0]] * 0.7, labels=labels)
    result = ensemble_scores([tmp_path / "a.npz", tmp_path / "b.npz"])
    assert result["top1"] == 1.0 and result["per_stream_top1"] == [0.5, 0.0]
    np.savez(tmp_path / "c.npz", scores=np.zeros((4, 5)), labels=labels)
    with pytest.raises(ValueError, match="do not match"):
        ensemble_scores([tmp_path / "a.npz", tmp_path / "c.npz"])


def test_bad_input_names_what_to_run(synthetic, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./params.yaml: the package defaults
    arguments = ["--benchmark", "xview", "--out", str(tmp_path / "r.json"), "--quiet",
                 "--set", "model.hidden_size=16", "--set", f"evaluation.cache_dir={tmp_path}"]
    assert main(["probe", "--data", str(tmp_path / "missing"), "--checkpoint", "random", *arguments]) == 2
    assert "prepare it first" in capsys.readouterr().err
    assert main(["probe", "--data", str(synthetic), "--checkpoint", str(tmp_path / "none.pt"), *arguments]) == 2
    assert "run usdrl pretrain first" in capsys.readouterr().err
    other_layout = tmp_path / "other.pt"
    torch.save({"encoder_config": {**encoder_record(ModelSection(hidden_size=16), ntu25_layout()), "num_joints": 17,
                                   "num_persons": 1},
                "layout": {"name": "coco", "joint_names": [f"j{i}" for i in range(17)], "bones": [], "center_joint": 1,
                           "shoulder_pair": [2, 3], "num_persons": 1, "num_coordinates": 3}, "model": {}}, other_layout)
    assert main(["probe", "--data", str(synthetic), "--checkpoint", str(other_layout), *arguments]) == 2
    assert "does not fit this dataset" in capsys.readouterr().err
    resized = tmp_path / "resized.pt"
    model = SkeletonModel(ModelSection(hidden_size=32))
    torch.save({"encoder_config": encoder_record(ModelSection(hidden_size=16), ntu25_layout()),
                "layout": ntu25_layout().to_dict(),
                "model": model.state_dict()}, resized)
    assert main(["probe", "--data", str(synthetic), "--checkpoint", str(resized), *arguments]) == 2
    assert "resized.pt does not fit the model" in capsys.readouterr().err
    wrong = tmp_path / "wrong.pt"
    torch.save({"state_dict": {"backbone.spe": torch.zeros(1, 50, 8), "backbone.ske_emb.t_embedding.0.weight": torch.zeros(8, 150)}}, wrong)
    assert main(["probe", "--data", str(synthetic), "--checkpoint", str(wrong), *arguments]) == 2
    assert "wrong.pt" in capsys.readouterr().err
