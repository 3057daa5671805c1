"""usdrl import poses and the pose estimator inputs: OpenPose, Kinetics-skeleton, MMPose and MediaPipe files
written here, two people crossing so that tracking matters."""

import json

import numpy as np
import pytest

from usdrl import load_model
from usdrl.cli.main import main
from usdrl.data.errors import DataError
from usdrl.data.poses import read_pose_clip
from usdrl.data.store import load_split, read_manifest
from usdrl.skeleton import load_layout

FRAMES = 11


def crossing_people(joints: int, coordinates: int = 2, seed: int = 0) -> np.ndarray:
    """(FRAMES, 2, joints, coordinates + 1) positions and confidence of two people crossing: person 0 walks to the
    right along y=150, person 1 to the left along y=250; they meet at frame 5. Person 0 is the more confident in
    the first frames, person 1 in the last ones, so ordering the detections of each frame by confidence swaps."""
    rng = np.random.default_rng(seed)
    shapes = [rng.uniform(-40, 40, (joints, coordinates)) for _ in range(2)]
    out = np.zeros((FRAMES, 2, joints, coordinates + 1))
    for frame in range(FRAMES):
        centres = [(100 + 20 * frame, 150), (300 - 20 * frame, 250)]
        for person in range(2):
            out[frame, person, :, :2] = shapes[person][:, :2] + centres[person]
            if coordinates == 3:
                out[frame, person, :, 2] = shapes[person][:, 2]
            out[frame, person, :, -1] = 0.9 if (frame < 5) == (person == 0) else 0.6
    return out


def write_openpose(folder, people):
    folder.mkdir(parents=True)
    for frame, persons in enumerate(people):
        order = persons[::-1] if frame % 2 else persons  # the detection order changes from frame to frame
        content = {"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": person.ravel().tolist()}
                                              for person in order]}
        (folder / f"{folder.name}_{frame:012d}_keypoints.json").write_text(json.dumps(content))


def write_kinetics(path, people, label="wave", label_index=3):
    data = [{"frame_index": frame + 1, "skeleton": [{"pose": person[:, :2].ravel().tolist(), "score": person[:, 2].tolist()}
                                                    for person in persons]} for frame, persons in enumerate(people)]
    path.write_text(json.dumps({"data": data, "label": label, "label_index": label_index}))


def write_mmpose(path, people):
    frames = [{"frame_id": frame, "instances": [{"keypoints": person[:, :-1].tolist(),
                                                  "keypoint_scores": person[:, -1].tolist(),
                                                  "bbox": [[0.0, 0.0, 10.0, 10.0]], "bbox_score": 0.9}
                                                 for person in persons[::-1]]} for frame, persons in enumerate(people)]
    path.write_text(json.dumps(frames))


def write_mediapipe(path, people):
    def landmarks(person):
        return [{"x": float(x), "y": float(y), "z": float(z), "visibility": float(c)} for x, y, z, c in person]

    frames = [{"pose_landmarks": [landmarks(person) for person in persons],
               "pose_world_landmarks": [landmarks(person * [0.01, 0.01, 0.01, 1]) for person in persons]} for persons in people]
    path.write_text(json.dumps(frames))


def walks_right(slot: np.ndarray) -> bool:
    """Whether the mean x of a person slot (C, T, V) grows every frame."""
    return bool(np.all(np.diff(slot[0].mean(axis=1)) > 0))


def test_openpose_tracks_two_crossing_people_without_swapping_them(tmp_path):
    people = crossing_people(25)
    write_openpose(tmp_path / "clip", people)
    x = read_pose_clip(tmp_path / "clip", "openpose", load_layout("body25")).x  # (C, T, V, M)
    assert x.shape == (2, FRAMES, 25, 2)
    assert {walks_right(x[..., 0]), walks_right(x[..., 1])} == {True, False}
    right = 0 if walks_right(x[..., 0]) else 1
    assert np.allclose(x[:, :, :, right], people[:, 0, :, :2].transpose(2, 0, 1), atol=1e-3)
    assert np.allclose(x[:, :, :, 1 - right], people[:, 1, :, :2].transpose(2, 0, 1), atol=1e-3)


def test_missing_joints_are_filled_from_their_track_not_left_at_zero(tmp_path):
    people = crossing_people(18)
    people[4, 0, 7] = 0.0  # left wrist of person 0 undetected in frame 5: x, y, confidence 0 as OpenPose writes
    people[:, 0, 17] = 0.0  # left ear of person 0 never detected
    people[6, 1, 3, 2] = 0.01  # right elbow of person 1 below the confidence threshold in frame 7
    write_kinetics(tmp_path / "clip.json", people)
    x = read_pose_clip(tmp_path / "clip.json", "kinetics", load_layout("coco18_score")).x  # (3, T, 18, 2)
    right = 0 if walks_right(x[..., 0]) else 1
    assert np.allclose(x[:2, 4, 7, right], (people[3, 0, 7, :2] + people[5, 0, 7, :2]) / 2, atol=1e-3)
    assert x[2, 4, 7, right] == 0  # the score channel says it was filled
    assert np.allclose(x[:2, :, 17, right], x[:2, :, 15, right])  # the ear sits at its parent, the left eye
    assert np.allclose(x[:2, 6, 3, 1 - right], (people[5, 1, 3, :2] + people[7, 1, 3, :2]) / 2, atol=1e-3)
    assert np.all(x[:2] != 0)  # no joint of either person is left at the origin


def test_mmpose_and_mediapipe_keep_the_most_confident_longest_track(tmp_path):
    people = crossing_people(17, coordinates=3)
    people[:, 1, :, -1] = 0.3  # person 1 the less confident throughout
    write_mmpose(tmp_path / "video.json", people)
    x = read_pose_clip(tmp_path / "video.json", "mmpose", load_layout("h36m17")).x
    assert x.shape == (3, FRAMES, 17, 1) and walks_right(x[..., 0])
    assert np.allclose(x[..., 0], people[:, 0, :, :3].transpose(2, 0, 1), atol=1e-3)
    marks = crossing_people(33, coordinates=3)
    marks[:, 0, :, -1] = 0.3
    write_mediapipe(tmp_path / "pose.json", marks)
    image = read_pose_clip(tmp_path / "pose.json", "mediapipe", load_layout("mediapipe33")).x
    world = read_pose_clip(tmp_path / "pose.json", "mediapipe", load_layout("mediapipe33_world")).x
    assert image.shape == (3, FRAMES, 33, 1) and not walks_right(image[..., 0])  # person 1 kept
    assert np.allclose(world, image / 100, atol=1e-4)


def _write_labels(path, rows, columns="clip,label,subject,split"):
    path.write_text(columns + "\n" + "\n".join(",".join(row) for row in rows) + "\n")


def test_import_poses_writes_the_store_with_labels_subjects_and_splits(tmp_path):
    clips = tmp_path / "clips"
    for number in range(4):
        write_openpose(clips / f"clip{number}", crossing_people(25, seed=number)[: FRAMES - number])
    write_openpose(clips / "unlabelled", crossing_people(25))
    _write_labels(tmp_path / "labels.csv", [("clip0", "wave", "1", "train"), ("clip1", "kick", "1", "train"),
                                            ("clip2", "wave", "2", "test"), ("clip3", "kick", "2", "test")])
    out = tmp_path / "store"
    assert main(["import", "poses", str(clips), "--format", "openpose", "--labels", str(tmp_path / "labels.csv"),
                 "--out", str(out), "--quiet"]) == 0
    manifest = read_manifest(out)
    assert manifest["layout"]["name"] == "body25" and manifest["class_names"] == ["kick", "wave"]
    assert [entry["name"] for entry in manifest["skipped"]] == ["unlabelled"]
    train, test = load_split(out, "custom", "train"), load_split(out, "custom", "test")
    assert train.names == ["clip0", "clip1"] and test.names == ["clip2", "clip3"]
    assert list(train.label) == [1, 0] and list(test.num_frames) == [FRAMES - 2, FRAMES - 3]
    assert train.x.shape == (4, 2, FRAMES, 25, 2) and list(test.ids["subject"]) == [2, 2]
    assert np.all(test.sample(1)[:, FRAMES - 3:] == 0)  # a shorter clip zero-padded
    people = crossing_people(25, seed=0)  # person 1: summed confidence 5 x 0.6 + 6 x 0.9 = 8.4 > 8.1 of person 0
    assert np.allclose(train.sample(0), people[..., :2].transpose(3, 0, 2, 1)[..., ::-1], atol=1e-3)  # as given (2D)


def test_import_without_split_column_says_what_to_add(tmp_path, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    for number in range(2):
        write_kinetics(clips / f"clip{number}.json", crossing_people(18, seed=number), label=["run", "jump"][number])
    assert main(["import", "poses", str(clips), "--format", "kinetics", "--layout", "coco18_score",
                 "--out", str(tmp_path / "store"), "--quiet"]) == 0  # labels from the files
    summary = json.loads(capsys.readouterr().out)
    assert summary["splits"] == ["all/all"] and "add a split column" in summary["note"]
    assert read_manifest(tmp_path / "store")["class_names"] == ["jump", "run"]
    assert load_split(tmp_path / "store", "all", "all").x.shape == (2, 3, FRAMES, 18, 2)


@pytest.fixture(scope="module")
def coco_model(tmp_path_factory):
    """A tiny encoder pretrained on COCO-17 2D keypoints (one person), exported with its linear probe's classifier
    (classes "wave" and "jump")."""
    import torch

    from usdrl.deploy.bundle import export_bundle
    from usdrl.evaluate.protocols import run_linear_probe
    from usdrl.settings.params import load_params
    from usdrl.training.pretrain import pretrain

    root = tmp_path_factory.mktemp("coco")
    x = np.random.default_rng(3).normal(size=(8, 2, 20, 17, 1)).astype(np.float32) * 20 + 200
    np.savez(root / "coco.npz", x=x, label=np.arange(8) % 2, split_xsub_train=np.arange(6),
             split_xsub_test=np.arange(6, 8), class_names=np.array(["wave", "jump"]))
    assert main(["import", "arrays", str(root / "coco.npz"), "--layout", "coco17", "--out", str(root / "data")]) == 0
    params = load_params(None, overrides=["model.hidden_size=16", "model.num_layers=1", "pretrain.epochs=1",
                                          "pretrain.batch_size=4", "pretrain.workers=0", "pretrain.device=cpu",
                                          "evaluation.device=cpu", "augment.corrupted_joints=5", "augment.minimum_crop=8",
                                          "probe.epochs=2", f"evaluation.cache_dir={root / 'cache'}"])
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pretrain(root / "data", "xsub", root / "run", params.model, params.augment, params.loss, params.pretrain,
                 progress=False)
        run_linear_probe(root / "data", "xsub", root / "run/checkpoints/last.pt", root / "probe.json", params)
    finally:
        torch.set_num_threads(previous)
    export_bundle(root / "run/checkpoints/last.pt", root / "model", probe=root / "probe.json")
    return root / "model"


def test_embed_reads_mmpose_output_directly(coco_model, tmp_path):
    people = crossing_people(17)
    write_mmpose(tmp_path / "video.json", people)
    frames = tmp_path / "frames"  # the per-image files of MMPose for a folder of images
    frames.mkdir()
    for frame, persons in enumerate(people):
        instances = [{"keypoints": person[:, :2].tolist(), "keypoint_scores": person[:, 2].tolist()} for person in persons]
        (frames / f"img_{frame:05d}.json").write_text(json.dumps(instances))
    model = load_model(coco_model)
    expected = model.embed(read_pose_clip(tmp_path / "video.json", "mmpose", load_layout("coco17")).x)["features"]
    assert np.allclose(model.embed(tmp_path / "video.json")["features"], expected, atol=1e-5)
    assert main(["embed", "--model", str(coco_model), str(frames), "--out", str(tmp_path / "f.npz")]) == 0
    assert np.allclose(np.load(tmp_path / "f.npz")["features"], expected, atol=1e-5)


def test_recognize_prints_classes_of_an_openpose_folder_for_a_2d_coco_model(coco_model, tmp_path, capsys):
    """OpenPose's COCO-18 output (18 keypoints per person) to a model of COCO-17 keypoints: mapped by joint names."""
    write_openpose(tmp_path / "walk", crossing_people(18))
    assert main(["recognize", "--model", str(coco_model), str(tmp_path / "walk"), "--top-k", "2", "--format", "jsonl"]) == 0
    captured = capsys.readouterr()
    assert "mapped coco18 -> coco17: 17 joints copied, 0 derived" in captured.err
    rows = [json.loads(line) for line in captured.out.splitlines() if line.strip()]
    assert [row["name"] for row in rows] == ["walk"]
    top = rows[0]["top"]
    assert sorted(entry["class"] for entry in top) == ["jump", "wave"]
    assert abs(sum(entry["probability"] for entry in top) - 1) < 1e-5  # the two classes' softmax


def test_bad_pose_input_is_one_line_naming_file_and_frame(coco_model, tmp_path, capsys):
    clips = tmp_path / "clips"
    write_openpose(clips / "mixed", crossing_people(25))
    short = json.loads((clips / "mixed" / "mixed_000000000003_keypoints.json").read_text())
    short["people"][0]["pose_keypoints_2d"] = short["people"][0]["pose_keypoints_2d"][:54]  # COCO-18 in a BODY_25 clip
    (clips / "mixed" / "mixed_000000000003_keypoints.json").write_text(json.dumps(short))
    _write_labels(tmp_path / "labels.csv", [("mixed", "wave")], columns="clip,label")
    write_openpose(tmp_path / "empty" / "nobody", np.zeros((3, 1, 25, 3)))
    _write_labels(tmp_path / "nobody.csv", [("nobody", "wave")], columns="clip,label")
    other = tmp_path / "other"
    other.mkdir()
    write_mmpose(other / "video.json", crossing_people(17))
    _write_labels(tmp_path / "video.csv", [("video", "wave")], columns="clip,label")
    cases = [
        (["poses", str(clips), "--format", "openpose", "--labels", str(tmp_path / "labels.csv")],
         "mixed_000000000003_keypoints.json: frame 4, person 1: 18 joints"),
        (["poses", str(tmp_path / "empty"), "--format", "openpose", "--layout", "body25",
          "--labels", str(tmp_path / "nobody.csv")], "an empty track is not a clip"),
        (["poses", str(other), "--format", "kinetics", "--labels", str(tmp_path / "video.csv")],
         "video.json: not a Kinetics-skeleton clip"),
        (["poses", str(clips), "--format", "openpose", "--labels", str(tmp_path / "video.csv")],
         "clip 'video' is not in"),
    ]
    for arguments, message in cases:
        assert main(["import", *arguments, "--out", str(tmp_path / "store"), "--quiet"]) == 2
        error = capsys.readouterr().err.strip()
        assert message in error and len(error.splitlines()) == 1, error
    assert not (tmp_path / "store").exists()
    write_openpose(tmp_path / "body", crossing_people(19))  # 19 joints: no built-in layout, not the model's 17
    assert main(["embed", "--model", str(coco_model), str(tmp_path / "body"), "--out", str(tmp_path / "f.npz")]) == 2
    error = capsys.readouterr().err.strip()
    assert "body_000000000000_keypoints.json: frame 1, person 1: 19 joints" in error and len(error.splitlines()) == 1
    write_openpose(tmp_path / "body25", crossing_people(25))  # BODY_25 frames for a COCO-17 model: mapped by names
    assert main(["embed", "--model", str(coco_model), str(tmp_path / "body25"), "--out", str(tmp_path / "f.npz")]) == 0
    assert "mapped body25 -> coco17: 17 joints copied, 0 derived" in capsys.readouterr().err
    with pytest.raises(DataError, match="frame 1, person 1: 17 joints"):
        read_pose_clip(other / "video.json", "mmpose", load_layout("body25"))


def test_the_new_layouts_join_the_named_joints():
    for name, pairs in {"body25": [("left_elbow", "left_shoulder"), ("mid_hip", "neck"), ("right_heel", "right_ankle")],
                        "coco18": [("left_knee", "left_hip"), ("left_hip", "left_shoulder"), ("nose", "neck")],
                        "mediapipe33": [("left_wrist", "left_elbow"), ("left_foot_index", "left_ankle")],
                        "h36m17": [("head", "neck"), ("right_shoulder", "thorax"), ("left_knee", "left_hip")]}.items():
        layout = load_layout(name)
        parents = layout.parent_index()
        for child, parent in pairs:
            assert layout.joint_names[parents[layout.joint_names.index(child)]] == parent, (name, child)
