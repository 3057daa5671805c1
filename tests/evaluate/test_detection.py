import json

import numpy as np
import pytest

from usdrl.data.errors import DataError
from usdrl.data.synthetic import SyntheticConfig, prepare_synthetic
from usdrl.evaluate.detection_metrics import (
    dataset_action_classes,
    detection_metrics,
    frame_labels_to_segments,
    map_action,
    map_video,
    official_ap,
    overlap,
    read_proposals,
    smoothed_proposals,
    threshold_proposals,
    voc_ap,
    write_proposals,
)
from usdrl.evaluate.detector import run_detection, training_windows
from usdrl.settings.params import load_params


def test_one_perfect_proposal_scores_one():
    truth = [(3, 10, 50, 2, "v")]
    assert official_ap([(3, 10, 50, 0.9, "v")], truth) == 1.0
    assert voc_ap([(3, 10, 50, 0.9, "v")], truth) == 1.0


def test_proposal_below_the_overlap_scores_zero():
    truth = [(3, 0, 100, 2, "v")]
    shifted = (3, 51, 151, 0.9, "v")  # overlap 49 / 151 ... below 0.5
    assert overlap(shifted, truth[0]) < 0.5
    exactly = (3, 0, 49, 0.9, "v")  # 49 / 100 = 0.49
    assert overlap(exactly, truth[0]) == pytest.approx(0.49)
    assert official_ap([exactly], truth) == 0.0 and voc_ap([exactly], truth) == 0.0
    assert overlap((4, 0, 100, 1, "v"), truth[0]) == 0 and overlap((3, 0, 100, 1, "w"), truth[0]) == 0


def test_ranked_true_false_true_with_two_ground_truths():
    truth = [(1, 0, 10, 2, "v"), (1, 20, 30, 2, "v")]
    proposals = [(1, 0, 10, 0.9, "v"), (1, 40, 50, 0.8, "v"), (1, 20, 30, 0.7, "v")]
    assert official_ap(proposals, truth) == pytest.approx(2 / 3)
    assert voc_ap(proposals, truth) == pytest.approx(5 / 6)


def test_matching_is_not_one_to_one_in_the_official_ap():
    truth = [(1, 0, 10, 2, "v")]
    duplicates = [(1, 0, 10, 0.9, "v"), (1, 0, 10, 0.8, "v")]
    assert official_ap(duplicates, truth) == pytest.approx(1.0)  # both take the same ground truth
    assert voc_ap(duplicates, truth) == pytest.approx(1.0)


def test_perfect_frame_probabilities_give_perfect_maps():
    rng = np.random.default_rng(0)
    truths, proposals = [], []
    for video in ("a", "b", "c"):
        labels = np.zeros(600, dtype=int)
        start = 10
        while start < 550:
            length = int(rng.integers(20, 60))
            labels[start:start + length] = rng.integers(1, 6)
            start += length + int(rng.integers(5, 30))
        probabilities = np.eye(6)[labels]
        truths += frame_labels_to_segments(labels, video)
        proposals += threshold_proposals(probabilities, video)
    assert map_action(proposals, truths) == 1.0 and map_video(proposals, truths) == 1.0
    metrics = detection_metrics(proposals, truths)
    assert metrics["0.5"]["mAP_a"] == metrics["0.5"]["mAP_v_voc"] == metrics["0.5"]["f1"] == 1.0


def test_video_without_proposals_counts_as_zero():
    truth = [(1, 0, 10, 2, "a"), (1, 0, 10, 2, "b")]
    assert map_video([(1, 0, 10, 0.9, "a")], truth) == 0.5


def test_smoothed_rule_finds_the_action():
    probabilities = np.zeros((200, 4))
    probabilities[:, 0] = 1
    probabilities[50:120] = [0.1, 0.1, 0.7, 0.1]
    (proposal,) = smoothed_proposals(probabilities, "v")
    assert proposal[0] == 2 and abs(proposal[1] - 50) <= 10 and abs(proposal[2] - 120) <= 10


def test_proposal_files_round_trip_and_bad_lines(tmp_path):
    proposals = [(2, 5, 40, 0.75, "0291-M"), (7, 50, 90, 0.5, "0291-M"), (1, 0, 9, 0.25, "0300-L")]
    write_proposals(proposals, tmp_path)
    assert (tmp_path / "0291-M.txt").read_text() == "2,5,40,0.750000\n7,50,90,0.500000\n"
    assert sorted(read_proposals(tmp_path)) == sorted(proposals)
    (tmp_path / "bad.txt").write_text("1,2,3\n")
    with pytest.raises(DataError, match=r"bad.txt:1: expected label,start,end,score"):
        read_proposals(tmp_path)


def test_training_windows_cover_short_and_long_sequences():
    windows = training_windows(np.array([30, 160]), window=64, stride=32)
    assert windows == [(0, 0), (1, 0), (1, 32), (1, 64), (1, 96)]
    assert training_windows(np.array([160]), 64, 32, offset=10) == [(0, 10), (0, 42), (0, 74)]


@pytest.mark.slow
def test_detection_on_synthetic_streams_beats_a_random_encoder(tmp_path):
    prepare_synthetic(tmp_path / "synthetic", SyntheticConfig(subjects=4, replications=1, training_subjects=(1, 2, 3),
                                                              streams_per_subject_camera=2))
    streams = tmp_path / "synthetic" / "streams"
    settings = ["model.hidden_size=32", "model.num_layers=1", "evaluation.device=cpu", "detection.batch_size=32",
                "detection.learning_rate=1.0"]
    untrained = run_detection(streams, "xsub", "random", tmp_path / "untrained",
                              load_params(None, overrides=settings + ["detection.epochs=0"]), figures=0)
    params = load_params(None, overrides=settings + ["detection.epochs=15"])
    # the dense head and encoder learn the actions from the frame labels of the training streams
    result = run_detection(streams, "xsub", "random", tmp_path / "detect", params, figures=1)
    metrics = result["metrics"]
    assert untrained["metrics"]["0.5"]["mAP_v"] < 0.1
    assert metrics["0.5"]["mAP_v"] > 0.3 and metrics["0.5"]["mAP_a"] > 0.2
    written = json.loads((tmp_path / "detect" / "results.json").read_text())
    assert written["protocol"] == "detection" and "0.5" in written["metrics"]["by_overlap"]
    assert len(list((tmp_path / "detect" / "proposals").glob("*.txt"))) >= 1
    assert (tmp_path / "detect" / "timelines").is_dir()
    with pytest.raises(DataError, match="untrimmed"):
        run_detection(tmp_path / "synthetic" / "actions", "xsub", "random", tmp_path / "d2", params)


def test_map_action_averages_over_every_class_of_the_dataset_as_the_official_script():
    # one test video holding classes 1 and 2 of a 5-action dataset: the official evaluate.py averages the AP
    # over all number_label - 1 = 5 action classes, a class without ground truth counting 0
    truth = [(1, 0, 10, 2, "v"), (2, 20, 30, 2, "v")]
    proposals = [(1, 0, 10, 0.9, "v"), (2, 20, 30, 0.8, "v"), (4, 40, 50, 0.95, "v")]
    metrics = detection_metrics(proposals, truth, thetas=(0.5,), classes=dataset_action_classes(["a"] * 5))["0.5"]
    assert metrics["mAP_a"] == pytest.approx(2 / 5)
    assert metrics["mAP_a_present_classes"] == 1.0  # the other form, under a name that says what it is
    assert metrics["mAP_v"] == pytest.approx(2 / 3)  # the confident false positive of class 4


def test_detection_replaces_only_a_folder_it_wrote(tmp_path, capsys):
    from usdrl.cli.main import main

    prepare_synthetic(tmp_path / "synthetic", SyntheticConfig(subjects=3, replications=1, training_subjects=(1, 2),
                                                              streams_per_subject_camera=1))
    streams = tmp_path / "synthetic" / "streams"
    settings = ["model.hidden_size=16", "model.num_layers=1", "evaluation.device=cpu", "detection.epochs=0"]
    user = tmp_path / "mine"
    (user / "proposals").mkdir(parents=True)
    (user / "proposals" / "mine.txt").write_text("1,0,10,0.5\n")
    (user / "results.json").write_text('{"mine": 1}')
    command = ["detect", "train", "--data", str(streams), "--benchmark", "xsub", "--checkpoint", "random", "--quiet",
               "--figures", "0", *[f"--set={setting}" for setting in settings]]
    assert main([*command, "--out", str(user)]) == 2
    error = capsys.readouterr().err
    assert str(user) in error and "choose a new folder" in error and len(error.strip().splitlines()) == 1
    assert (user / "proposals" / "mine.txt").read_text() == "1,0,10,0.5\n"
    assert (user / "results.json").read_text() == '{"mine": 1}'
    # a folder of ours is replaced, again and again; one entry it did not write stops the next run
    ours = tmp_path / "detect"
    params = load_params(None, overrides=settings)
    for _ in range(2):
        run_detection(streams, "xsub", "random", ours, params, figures=1)
    assert (ours / "results.json").is_file() and any((ours / "proposals").glob("*.txt"))
    (ours / "proposals" / "mine.txt").write_text("mine")
    with pytest.raises(DataError, match=r"proposals/mine.txt is in the way"):
        run_detection(streams, "xsub", "random", ours, params, figures=0)
    assert (ours / "proposals" / "mine.txt").read_text() == "mine" and (ours / "results.json").is_file()
