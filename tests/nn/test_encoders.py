"""Golden tests: the released implementation's tensors, reproduced by our model from its weights."""

import json

import pytest
import torch
from conftest import TINY_MODEL

from usdrl.nn.encoders import SkeletonModel, count_parameters, encoder_record, model_section_of_record
from usdrl.settings.sections import ModelSection
from usdrl.skeleton import SkeletonLayout, ntu25_layout
from usdrl.training.checkpoint_files import CheckpointError
from usdrl.training.released_checkpoints import load_released, translate_released_key

OUTPUTS = ("dense_t", "dense_s", "features", "z_t", "z_s", "z_i")


@pytest.mark.parametrize("backbone", ["dste", "sttr"])
@pytest.mark.parametrize("modality", ["joint", "bone", "motion"])
def test_reproduces_released_tensors(shared, backbone, modality):
    reference = torch.load(shared / "reference" / f"{backbone}_tiny.pt", weights_only=True)
    model = load_released(reference["state_dict"], backbone, **reference["config"])
    assert not model.training
    with torch.no_grad():
        outputs = model(reference["input"], modality=modality)
        temporal, spatial = model.tokens(reference["input"], modality)
    expected = reference[modality]
    assert torch.equal(temporal, expected["encoder_input_t"]) and torch.equal(spatial, expected["encoder_input_s"])
    for name in OUTPUTS:
        assert outputs[name].shape == expected[name].shape
        assert (outputs[name] - expected[name]).abs().max().item() <= 1e-5, name


def test_released_checkpoint_with_module_prefix_loads(shared):
    reference = torch.load(shared / "reference" / "dste_tiny.pt", weights_only=True)
    prefixed = {f"module.{key}": value for key, value in reference["state_dict"].items()}
    model = load_released({"epoch": 451, "state_dict": prefixed}, "dste", hidden_size=64, num_head=1, num_layer=2)
    with torch.no_grad():
        features = model(reference["input"])["features"]
    assert torch.allclose(features, reference["joint"]["features"], atol=1e-5)


@pytest.mark.parametrize("name", ["dste_pretrain", "dste_downstream", "sttr_pretrain", "sttr_downstream"])
def test_every_full_size_released_key_maps(shared, name):
    keys = json.loads((shared / "reference" / "checkpoint_keys.json").read_text())[name]
    state_dict = {key: torch.zeros(shape) for key, shape in keys.items()}
    model = load_released(state_dict, name.split("_")[0])  # strict: no missing or unexpected key
    assert model.config.hidden_size == 1024
    assert (model.head is not None) == name.endswith("downstream")
    if name == "dste_pretrain":
        assert 90e6 < count_parameters(model) < 100e6  # "about 95M parameters with projectors"


def test_unknown_and_mismatched_keys_are_clear_errors():
    with pytest.raises(CheckpointError, match="no counterpart"):
        translate_released_key("module.backbone.something_else.weight")
    model = SkeletonModel(TINY_MODEL)
    state = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError):
        load_released(state, "dste")


def test_layer_count_is_honoured_and_sizes_follow_the_layout():
    three = SkeletonModel(ModelSection(hidden_size=16, num_layers=3, clip_frames=32))
    assert len(three.encoder.temporal_layers) == 3 and len(three.encoder.spatial_layers) == 3
    outputs = three(torch.randn(4, 3, 32, 25, 2))
    assert outputs["dense_t"].shape == (4, 32, 16) and outputs["dense_s"].shape == (4, 50, 16)
    assert outputs["z_i"].shape == (4, 64) and outputs["z_t"].shape == (4, 32)
    two_d = ModelSection(hidden_size=16, clip_frames=20)
    coco = SkeletonLayout("coco", tuple(f"j{i}" for i in range(17)), ((1, 0),), 0, (5, 6), 1, 2)
    small = SkeletonModel(two_d, layout=coco, num_classes=7)
    outputs = small(torch.randn(3, 2, 20, 17, 1), modality="bone")
    assert outputs["dense_s"].shape == (3, 17, 16) and outputs["logits"].shape == (3, 7)
    assert small.encoder.temporal_embedding[0].in_features == 17 * 1 * 2  # M*V*C from the layout
    assert small.encoder.spatial_embedding[0].in_features == 20 * 2  # T*C


def test_the_encoder_record_keeps_its_file_form_and_reads_back():
    """Checkpoints and bundles record the model section and the layout's sizes under the keys they always had."""
    coco = SkeletonLayout("coco", tuple(f"j{i}" for i in range(17)), ((1, 0),), 0, (5, 6), 1, 2)
    record = SkeletonModel(ModelSection(hidden_size=16, clip_frames=20), layout=coco).encoder_record()
    assert list(record) == ["backbone", "hidden_size", "num_heads", "num_layers", "alpha", "gap", "kernel_size",
                            "drop_path", "clip_frames", "num_joints", "num_persons", "num_coordinates"]
    assert (record["num_joints"], record["num_persons"], record["num_coordinates"]) == (17, 1, 2)
    assert model_section_of_record(record, coco) == ModelSection(hidden_size=16, clip_frames=20)
    assert model_section_of_record({"hidden_size": 8}, ntu25_layout()) == ModelSection(hidden_size=8)  # NTU sizes
    with pytest.raises(ValueError, match="does not match"):
        model_section_of_record(record, ntu25_layout())
    with pytest.raises(TypeError, match="width"):
        model_section_of_record({**encoder_record(ModelSection(), ntu25_layout()), "width": 3}, ntu25_layout())


def test_drop_path_only_in_training():
    torch.manual_seed(0)
    model = SkeletonModel(ModelSection(hidden_size=16, drop_path=0.5))
    x = torch.randn(8, 3, 64, 25, 2)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.encode(x)["features"], model.encode(x)["features"])
    model.train()
    with torch.no_grad():
        assert not torch.equal(model.encode(x)["features"], model.encode(x)["features"])


def test_the_backbone_names_are_the_registry_everywhere():
    from usdrl.nn.encoders import BACKBONES
    from usdrl.settings.params import ALLOWED
    from usdrl.settings.sections import BACKBONE_NAMES

    # usdrl.settings sits below usdrl.nn (no upward import), so its names are compared with the registry here
    assert BACKBONE_NAMES == tuple(BACKBONES) and ALLOWED[(ModelSection, "backbone")].choices == BACKBONE_NAMES
    with pytest.raises(ValueError, match="choose dste or sttr"):
        SkeletonModel(ModelSection(backbone="xyz", hidden_size=16))


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_a_branch_weighted_zero_is_skipped_without_changing_output_or_gradients(alpha):
    from usdrl.nn.encoders import DenseSpatioTemporalLayer

    torch.manual_seed(0)
    layer = DenseSpatioTemporalLayer(16, 2, 12, ModelSection(hidden_size=16, alpha=alpha, drop_path=0.0)).train()
    x = torch.randn(4, 12, 16, requires_grad=True)
    skipped = layer(x)
    (skipped.square().sum()).backward()
    gradients = {"x": x.grad.clone(), **{name: p.grad.clone() for name, p in layer.attention.named_parameters()}}
    x.grad = None
    layer.zero_grad(set_to_none=True)
    full = (alpha * layer.convolutional_attention(x, layer.attention)
            + (1 - alpha) * layer.dense_shift_attention(x, layer.attention))  # the released formula, both branches
    (full.square().sum()).backward()
    assert torch.equal(skipped, full)
    assert torch.equal(gradients["x"], x.grad)
    for name, parameter in layer.attention.named_parameters():  # the shared attention: zero added by the other branch
        assert torch.allclose(gradients[name], parameter.grad, rtol=0, atol=1e-6), name
    unused = layer.dense_shift_attention if alpha == 1 else layer.convolutional_attention
    layer.zero_grad(set_to_none=True)
    layer(x).sum().backward()
    assert all(p.grad is None for p in unused.parameters())  # not computed at all
