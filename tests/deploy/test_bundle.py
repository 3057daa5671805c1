"""Model bundles: export of a tiny trained model, reload in a fresh process with identical outputs, refusal of
a changed bundle, the input kinds through embed / recognize / detect run, and clear one-line errors."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import standing_body, write_skeleton_file

from usdrl import load_model
from usdrl.cli.main import main
from usdrl.data.errors import DataError
from usdrl.data.normalize import normalize_batch
from usdrl.data.store import load_split
from usdrl.data.synthetic import SyntheticConfig, prepare_synthetic
from usdrl.deploy.bundle import BundleError, export_bundle
from usdrl.deploy.inference import normalise_window
from usdrl.evaluate.detection_metrics import read_proposals
from usdrl.evaluate.detector import run_detection
from usdrl.evaluate.features import extract_features, open_encoder
from usdrl.evaluate.protocols import run_linear_probe
from usdrl.settings.params import load_params
from usdrl.skeleton import ntu25_layout
from usdrl.training.pretrain import pretrain

SETTINGS = ["model.hidden_size=16", "model.num_layers=1", "pretrain.epochs=1", "pretrain.batch_size=16",
            "pretrain.workers=0", "pretrain.device=cpu", "evaluation.device=cpu", "probe.epochs=5",
            "probe.learning_rates={default: 0.5}", "detection.epochs=1", "detection.batch_size=32"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny pretrained encoder, its probe and detector, exported as a bundle (about 4 s on one thread)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("trained")
    prepare_synthetic(root / "data", SyntheticConfig(subjects=3, replications=1, training_subjects=(1, 2),
                                                     streams_per_subject_camera=1))
    params = load_params(None, overrides=SETTINGS + [f"evaluation.cache_dir={root / 'cache'}"])
    pretrain(root / "data/actions", "xview", root / "run", params.model, params.augment, params.loss, params.pretrain,
             progress=False)
    checkpoint = root / "run/checkpoints/last.pt"
    run_linear_probe(root / "data/actions", "xview", checkpoint, root / "probe.json", params)
    run_detection(root / "data/streams", "xsub", checkpoint, root / "detect", params, figures=0)
    export_bundle(checkpoint, root / "model", probe=root / "probe.json", detector=root / "detect")
    yield {"root": root, "checkpoint": checkpoint, "params": params, "model": root / "model",
           "actions": root / "data/actions", "streams": root / "data/streams"}
    torch.set_num_threads(previous)


def _usdrl(*arguments, cwd=None):
    return subprocess.run([sys.executable, "-m", "usdrl.cli.main", *map(str, arguments)], capture_output=True, text=True,
                          cwd=cwd, env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


def test_a_fresh_process_gives_the_pipeline_s_embeddings_and_predictions(trained, tmp_path):
    test = load_split(trained["actions"], "xview", "test")
    encoder, _ = open_encoder(trained["checkpoint"], trained["params"].model, test.layout)
    pipeline_features = extract_features(encoder, test, "joint", torch.device("cpu"))
    pipeline_scores = np.load(trained["root"] / "probe.scores.npz")["scores"]  # what the probe reported
    process = _usdrl("embed", "--model", trained["model"], trained["actions"], "--split", "xview/test", "--out",
                     tmp_path / "features.npz", "--dense")
    assert process.returncode == 0, process.stderr
    with np.load(tmp_path / "features.npz") as stored:
        assert np.array_equal(stored["features"], pipeline_features)
        assert list(stored["names"]) == test.names and stored["dense"].shape == (len(test), 64, 16)
    process = _usdrl("recognize", "--model", trained["model"], trained["actions"], "--split", "xview/test",
                     "--top-k", "3")
    assert process.returncode == 0, process.stderr
    rows = [json.loads(line) for line in process.stdout.splitlines()]
    assert [row["name"] for row in rows] == test.names
    assert [row["top"][0]["index"] for row in rows] == pipeline_scores.argmax(axis=1).tolist()
    expected = torch.softmax(torch.from_numpy(pipeline_scores), dim=1).numpy()
    obtained = np.array([row["top"][0]["probability"] for row in rows])
    assert np.allclose(obtained, expected.max(axis=1), atol=1e-6)


def test_the_bundle_describes_itself_without_pickle(trained):
    folder = trained["model"]
    description = json.loads((folder / "model.json").read_text())
    assert description["layout"]["name"] == "ntu25" and description["modality"] == "joint"
    assert description["preprocessing"]["normalise"] and description["preprocessing"]["clip_frames"] == 64
    assert description["preprocessing"]["training_data"]["dataset"] == "synthetic"
    assert len(description["class_names"]) == 20 and set(description["heads"]) == {"classifier", "detector"}
    assert description["heads"]["classifier"]["provenance"]["checkpoint_sha256"] == \
        description["source"]["checkpoint_sha256"]
    assert set(description["files"]) == {"README.md", "encoder.safetensors", "classifier.safetensors",
                                         "detector.safetensors"}
    for name in description["files"]:
        assert not (folder / name).read_bytes().startswith(b"PK"), "no zip / torch.save pickle in a bundle"
    card = (folder / "README.md").read_text()
    assert "ntu25" in card and "top-1" in card and description["source"]["checkpoint_sha256"] in card


@pytest.mark.parametrize("change", ["weights", "description", "missing"])
def test_a_changed_bundle_is_refused(trained, tmp_path, change):
    copy = tmp_path / "model"
    shutil.copytree(trained["model"], copy)
    if change == "weights":
        data = bytearray((copy / "classifier.safetensors").read_bytes())
        data[-1] ^= 1
        (copy / "classifier.safetensors").write_bytes(bytes(data))
    elif change == "description":
        description = json.loads((copy / "model.json").read_text())
        description["class_names"][0] = "something else"
        (copy / "model.json").write_text(json.dumps(description))
    else:
        (copy / "encoder.safetensors").unlink()
    with pytest.raises(BundleError, match="changed|missing"):
        load_model(copy)
    process = _usdrl("embed", "--model", copy, trained["actions"], "--out", tmp_path / "f.npz")
    assert process.returncode == 2 and len(process.stderr.strip().splitlines()) == 1
    assert "Traceback" not in process.stderr and not (tmp_path / "f.npz").exists()


def test_a_raw_ntu_file_gives_the_features_of_its_prepared_sample(trained, tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "raw"
    raw.mkdir()
    frames = [[first, second] for first, second in zip(standing_body(rng, 70), standing_body(rng, 70, offset=(1, 0, 3)))]
    frames += [[] for _ in range(3)]  # trailing frames without a body count in num_frames, as prepare counts them
    path = write_skeleton_file(raw / "S001C001P001R001A001.skeleton", frames)
    write_skeleton_file(raw / "S001C002P001R001A002.skeleton", [[body] for body in standing_body(rng, 40)])
    assert main(["prepare", "ntu60", "--raw", str(raw), "--out", str(tmp_path / "ntu"), "--quiet", "--workers", "1"]) == 0
    model = load_model(trained["model"])
    from_file = model.embed(path)
    from_folder = model.embed(tmp_path / "ntu")
    assert from_file["names"] == ["S001C001P001R001A001"]
    assert np.allclose(from_file["features"][0], from_folder["features"][0], atol=1e-5)
    assert len(model.recognize(path, top_k=4)[0]["top"]) == 4


def test_arrays_pku_text_and_arrays_in_memory_agree(trained, tmp_path):
    rng = np.random.default_rng(1)
    sequence = np.stack([standing_body(rng, 50), np.zeros((50, 25, 3))], axis=1)  # (T, M, V, C)
    (tmp_path / "clip.txt").write_text("\n".join(" ".join(f"{v:.6f}" for v in frame.ravel()) for frame in sequence))
    x = sequence.transpose(3, 0, 2, 1)[None].astype(np.float32)  # (1, C, T, V, M)
    np.savez(tmp_path / "clips.npz", x=np.concatenate([x, x * 1.1]), names=np.array(["a", "b"]))
    model = load_model(trained["model"])
    from_text = model.embed(tmp_path / "clip.txt")["features"]
    from_arrays = model.embed(tmp_path / "clips.npz")
    from_memory = model.embed(x)["features"]
    assert from_arrays["names"] == ["a", "b"] and from_arrays["features"].shape == (2, 32)
    assert np.allclose(from_text, from_arrays["features"][:1], atol=1e-5)
    assert np.allclose(from_memory, from_text, atol=1e-5)


def test_detect_run_gives_the_pipeline_s_proposals_and_a_timeline(trained, tmp_path):
    out = tmp_path / "detections"
    assert main(["detect", "run", "--model", str(trained["model"]), str(trained["streams"]), "--split", "xsub/test",
                 "--out", str(out), "--figures", "1"]) == 0
    ours = sorted(read_proposals(out / "proposals"))
    pipeline = sorted(read_proposals(trained["root"] / "detect" / "proposals"))
    assert ours == pipeline and ours
    written = json.loads((out / "proposals.json").read_text())
    assert sum(len(stream["proposals"]) for stream in written["streams"]) == len(ours)
    assert len(list((out / "timelines").glob("*.png"))) == 1


def test_a_stream_window_is_normalised_as_the_whole_stream():
    rng = np.random.default_rng(2)
    stream = np.stack([standing_body(rng, 90), standing_body(rng, 90, offset=(1, 0, 3))], -1).transpose(2, 0, 1, 3)
    stream = stream.astype(np.float32)  # (C, L, V, M)
    layout = ntu25_layout()
    whole = normalize_batch(stream[None], layout.center_joint, layout.shoulder_pair, pad_frames=False)[0]
    window = normalise_window(stream[:, 40:72], stream[:, :1], layout)
    assert np.allclose(window, whole[:, 40:72], atol=1e-5)


def _coco_model(tmp_path_factory):
    """A tiny encoder pretrained on COCO-17 2D keypoints (one person), exported without heads."""
    root = tmp_path_factory.mktemp("coco")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 2, 70, 17, 1)).astype(np.float32) * 20 + 200
    np.savez(root / "coco.npz", x=x, label=np.arange(12) % 3, split_xsub_train=np.arange(8),
             split_xsub_test=np.arange(8, 12))
    assert main(["import", "arrays", str(root / "coco.npz"), "--layout", "coco17", "--out", str(root / "data")]) == 0
    params = load_params(None, overrides=SETTINGS + ["pretrain.batch_size=4", "augment.corrupted_joints=5"])
    pretrain(root / "data", "xsub", root / "run", params.model, params.augment, params.loss, params.pretrain,
             progress=False)
    export_bundle(root / "run/checkpoints/last.pt", root / "model")
    return root


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return _coco_model(tmp_path_factory)


def test_coco_keypoints_json_and_the_errors_of_bad_input(coco, tmp_path, capsys):
    rng = np.random.default_rng(4)
    frames = [[[[float(v) for v in rng.uniform(0, 400, 2)] + [0.9] for _ in range(17)],
               [[10.0, 10.0, 0.1] for _ in range(17)]] for _ in range(30)]  # a second, weaker detection
    (tmp_path / "video.json").write_text(json.dumps(frames))
    model = load_model(coco / "model")
    features = model.embed(tmp_path / "video.json")["features"]
    strongest = np.array([[keypoint[:2] for keypoint in frame[0]] for frame in frames], dtype=np.float32)  # (T, V, 2)
    assert np.allclose(features, model.embed(strongest.transpose(2, 0, 1)[..., None])["features"], atol=1e-5)
    (tmp_path / "bad.json").write_text('[[[1, 2, 0.5]], ')
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "no_frames.json").write_text("[]")
    ntu = write_skeleton_file(tmp_path / "S001C001P001R001A001.skeleton",
                              [[body] for body in standing_body(np.random.default_rng(0), 10)])
    cases = {"bad.json": "malformed JSON", "empty.json": "is empty", "no_frames.json": "holds no frames",
             ntu.name: "ntu25"}
    for name, message in cases.items():
        assert main(["embed", "--model", str(coco / "model"), str(tmp_path / name), "--out", str(tmp_path / "f.npz")]) == 2
        error = capsys.readouterr().err.strip()
        assert message in error and len(error.splitlines()) == 1, error
    assert "coco17" in error  # the wrong layout names both layouts


def test_the_shared_real_samples_are_recognised(trained, shared, tmp_path):
    model = load_model(trained["model"])
    samples = sorted((shared / "data" / "ntu_samples").glob("*.skeleton"))
    rows = [model.recognize(path, top_k=2)[0] for path in samples]
    assert [row["name"] for row in rows] == [path.stem for path in samples]
    pku = shared / "data" / "pkummd_sample" / "skeleton" / "0005-M.txt"
    assert model.embed(pku)["features"].shape == (1, 32)
    detected = model.detect(pku)[0]
    assert detected["frames"] == 1507 and detected["probabilities"].shape == (1507, 21)


def test_onnx_export_matches_pytorch(trained, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    bundle = tmp_path / "model"
    export_bundle(trained["checkpoint"], bundle, probe=trained["root"] / "probe.json", onnx=True)
    description = json.loads((bundle / "model.json").read_text())
    assert description["onnx"]["parity_max_abs_difference"] <= 1e-4
    model = load_model(bundle)
    clips = model.clips(trained["actions"], "xview/test")
    from usdrl.evaluate.features import downstream_batches

    _, x = next(downstream_batches(clips, 7, 64, torch.device("cpu")))
    session = onnxruntime.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    features, dense, probabilities = session.run(None, {"x": x.numpy()})
    with torch.no_grad():  # PyTorch eager in float32, as onnxruntime computes
        encoded = model.encoder.encode(x, model.modality)
    difference = max(float(np.abs(features - encoded["features"].numpy()).max()),
                     float(np.abs(dense - encoded["dense_t"].numpy()).max()))
    assert difference <= 1e-4, difference
    assert np.abs(probabilities - model.probabilities(encoded["features"].numpy())).max() <= 1e-4


def test_a_released_checkpoint_exports_as_an_encoder_only_bundle(shared, tmp_path):
    from usdrl.data.errors import DataError

    reference = torch.load(shared / "reference" / "dste_tiny.pt", weights_only=True)
    prefixed = {f"module.{key}": value for key, value in reference["state_dict"].items()}
    torch.save({"epoch": 451, "state_dict": prefixed}, tmp_path / "released.pth.tar")
    export_bundle(tmp_path / "released.pth.tar", tmp_path / "model")
    model = load_model(tmp_path / "model", precision="fp32")
    assert model.description["source"]["kind"].startswith("released") and model.description["heads"] == {}
    assert model.description["preprocessing"]["normalise"] and model.layout.name == "ntu25"
    with torch.no_grad():
        features = model.encoder.encode(reference["input"])["features"]
    assert torch.allclose(features, reference["joint"]["features"], atol=1e-5)
    with pytest.raises(DataError, match="no classifier"):
        model.recognize(reference["input"].numpy())


def test_export_replaces_only_a_bundle_holding_nothing_but_its_files(trained, tmp_path, capsys):
    user = tmp_path / "m"
    (user / "sub").mkdir(parents=True)
    (user / "model.json").write_text("{}")  # a file name anyone's folder may hold: no marker
    (user / "keep.bin").write_text("x")
    assert main(["export", "--checkpoint", str(trained["checkpoint"]), "--out", str(user)]) == 2
    error = capsys.readouterr().err
    assert str(user) in error and "choose a new folder" in error and len(error.strip().splitlines()) == 1
    assert sorted(p.name for p in user.iterdir()) == ["keep.bin", "model.json", "sub"]
    assert (user / "model.json").read_text() == "{}" and (user / "keep.bin").read_text() == "x"
    ours = tmp_path / "bundle"
    shutil.copytree(trained["model"], ours)
    export_bundle(trained["checkpoint"], ours)  # a bundle of ours is replaced
    assert sorted(p.name for p in ours.iterdir()) == ["README.md", "encoder.safetensors", "model.json"]
    (ours / "notes.txt").write_text("mine")  # one entry model.json does not list
    with pytest.raises(DataError, match=rf"--out {ours}: notes.txt is in the way"):
        export_bundle(trained["checkpoint"], ours)
    assert (ours / "notes.txt").read_text() == "mine" and (ours / "model.json").is_file()
