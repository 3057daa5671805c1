import argparse
import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from conftest import REPOSITORY

from usdrl.cli.main import load_settings, main
from usdrl.settings.params import load_params
from usdrl.settings.sections import ConfigError, Params


def _arguments(params=None, profile=None, overrides=()):
    return argparse.Namespace(params=params, profile=profile, set=list(overrides))


def test_the_package_defaults_and_the_repository_params_pass_their_own_checks():
    assert load_params(None) == Params()
    for section, values in dataclasses.asdict(Params()).items():
        for key, value in (values.items() if isinstance(values, dict) else []):
            # every default value, given back as an override (JSON is YAML), is accepted unchanged
            assert load_params(None, overrides=[f"{section}.{key}={json.dumps(value)}"]) == Params()
    demo = load_params(REPOSITORY / "params.yaml", "demo")
    assert demo.model.hidden_size == 64 and demo.augment.crop_scale == (0.1, 1.0)
    assert isinstance(demo.pretrain.learning_rate, float) and demo.pretrain.milestones == (5,)
    assert load_params(REPOSITORY / "params.yaml", "paper").model.hidden_size == 1024


# Where params.yaml's default (non-profile) sections deliberately differ from the sections' defaults, with the
# value params.yaml holds there; every other setting must be the same in both.
PARAMS_YAML_DIFFERENCES = {
    "profile": "demo",  # the repository runs the demo by default; the package's default profile is paper
    "model.clip_frames": "auto",  # resolved from the training split; the package's default is the released 64
    "augment.minimum_crop": "auto",  # resolved from the training split; the package's default is the released 64
}
PARAMS_YAML_OWN_SECTIONS = ("pipeline",)  # the demo's stage lists (what dvc.yaml runs); the package lists none


def _settings(values, prefix=""):
    """Every setting of a (nested) mapping of sections by its dotted name; a mapping setting by its own keys."""
    found = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        found.update(_settings(value, f"{name}.") if isinstance(value, dict) and value else {name: value})
    return found


def test_params_yaml_holds_every_default_of_the_sections_and_only_them(tmp_path):
    raw = yaml.safe_load((REPOSITORY / "params.yaml").read_text())
    raw.pop("profiles")
    written, defaults = _settings(raw), _settings(dataclasses.asdict(Params()))
    assert {name: written[name] for name in PARAMS_YAML_DIFFERENCES} == PARAMS_YAML_DIFFERENCES
    assert all(defaults[name] != value for name, value in PARAMS_YAML_DIFFERENCES.items())  # still differences

    def shared(names):
        return {name for name in names if name.split(".")[0] not in PARAMS_YAML_OWN_SECTIONS}

    assert shared(written) == shared(defaults)  # every setting of the sections is written out, and no other
    # the values as the sections take them (lists as tuples, 1e-5 as a float), with params.yaml's differences
    del raw["profile"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**raw, **{section: {} for section in PARAMS_YAML_OWN_SECTIONS}}))
    loaded = _settings(dataclasses.asdict(load_params(tmp_path / "params.yaml")))
    changed = {name: (value, defaults[name]) for name, value in loaded.items()
               if name not in PARAMS_YAML_DIFFERENCES and value != defaults[name]}
    assert changed == {}, "params.yaml (first) and usdrl/settings/sections.py (second) differ: change both"


def test_a_missing_params_file_given_explicitly_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no ./params.yaml here
    assert load_settings(_arguments(), {}) == Params()  # the default file missing: the package defaults
    with pytest.raises(ConfigError, match="params file paramz.yaml does not exist"):
        load_settings(_arguments(params=Path("paramz.yaml")), {})
    code = main(["probe", "--data", "d", "--benchmark", "xsub", "--checkpoint", "random", "--out", "r.json",
                 "--params", "paramz.yaml"])
    error = capsys.readouterr().err
    assert code == 2 and "paramz.yaml does not exist" in error and len(error.strip().splitlines()) == 1
    (tmp_path / "params.yaml").write_text("model:\n  hidden_size: 32\n")
    assert load_settings(_arguments(), {}).model.hidden_size == 32  # ./params.yaml when present


@pytest.mark.parametrize("override, message", [
    ("model.hidden_size=abc", "--set model.hidden_size=abc: model.hidden_size must be an integer, got 'abc'"),
    ("model.hidden_size=2.5", "model.hidden_size must be an integer"),
    ("model.hidden_size=true", "model.hidden_size must be an integer"),
    ("model.alpha=high", "model.alpha must be a number"),
    ("model.backbone=3", "model.backbone must be a string"),
    ("detection.random_offset=1", "detection.random_offset must be true or false"),
    ("augment.crop_scale=[0.1, 0.5, 1.0]", r"augment.crop_scale must be a list of 2 values"),
    ("pretrain.milestones=[100, x]", r"pretrain.milestones\[1\] must be an integer, got 'x'"),
    ("pretrain.milestones=100", "pretrain.milestones must be a list of integers, got 100"),
    ("probe.learning_rates=0.1", "probe.learning_rates must be a mapping"),
    ("model=3", "model must be a mapping"),
    ("model.hiden_size=8", "unknown key 'model.hiden_size'; did you mean 'hidden_size'"),
    ("data.synthetic.subject=8", "unknown key 'data.synthetic.subject'; did you mean 'subjects'"),
    ("modle.hidden_size=8", "unknown key 'modle'; did you mean 'model'"),
    ("pretrain.epochs", "must look like section.key=value"),
])
def test_every_value_is_checked_against_its_type(override, message):
    with pytest.raises(ConfigError, match=message):
        load_params(None, overrides=[override])


def test_accepted_values_take_the_field_type():
    params = load_params(None, overrides=["pretrain.learning_rate=1", "loss.tau=1e-3", "pretrain.milestones=[10, 20]",
                                          "data.synthetic.seed=4", "probe.learning_rates={default: 0.5}"])
    assert params.pretrain.learning_rate == 1.0 and isinstance(params.pretrain.learning_rate, float)
    assert params.loss.tau == 0.001  # YAML reads 1e-3 as text
    assert params.pretrain.milestones == (10, 20) and params.data.synthetic.seed == 4
    assert params.probe.learning_rate("dste", "ntu60", "xsub") == 0.5


def test_a_bad_file_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("model:\n  hidden_size: big\n")
    with pytest.raises(ConfigError, match=r"params.yaml: model.hidden_size must be an integer, got 'big'"):
        load_params(path)
    path.write_text("profiles:\n  small:\n    model: {hidden: 8}\n")
    with pytest.raises(ConfigError, match=r"profile small\): unknown key 'model.hidden'; did you mean 'hidden_size'"):
        load_params(path, "small")
    path.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_params(path)


def test_an_unknown_profile_lists_each_profile_once(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("profiles:\n  paper: {}\n  demo: {}\n")
    with pytest.raises(ConfigError) as error:
        load_params(path, "dmeo")
    assert str(error.value).endswith("known: demo, paper")


def test_nested_sections_come_from_the_type_hints():
    @dataclasses.dataclass(frozen=True)
    class Inner:
        size: int = 1

    @dataclasses.dataclass(frozen=True)
    class Outer:
        inner: Inner = dataclasses.field(default_factory=Inner)

    from usdrl.settings.params import _build

    assert _build(Outer, {"inner": {"size": 3}}, "", lambda key: "test").inner == Inner(3)
    with pytest.raises(ConfigError, match="inner.size must be an integer"):
        _build(Outer, {"inner": {"size": "x"}}, "", lambda key: "test")


@pytest.mark.parametrize("override, message", [
    ("model.hidden_size=0", "--set model.hidden_size=0: model.hidden_size must be at least 1 and at most 4096, got 0"),
    ("model.hidden_size=-4", "model.hidden_size must be at least 1 and at most 4096, got -4"),
    ("model.hidden_size=15", r"model.hidden_size \(15\) must be even"),
    ("model.backbone=xyz", "--set model.backbone=xyz: model.backbone must be one of dste, sttr, got 'xyz'"),
    ("model.num_heads=3", r"--set model.num_heads=3: model.hidden_size \(1024\) must be even and a multiple of "
                          r"model.num_heads \(3\)"),
    ("model.clip_frames=300", "model.clip_frames must be at least 1 and at most 200"),
    ("loss.form=xyz", "loss.form must be one of released, paper"),
    ("evaluation.device=tpu", "evaluation.device must be auto, cpu, cuda or cuda:N"),
    ("pretrain.device=cuda1", "pretrain.device must be auto, cpu, cuda or cuda:N"),
    ("pretrain.precision=fp8", "pretrain.precision must be one of auto, fp32, bf16, fp16"),
    ("pretrain.checkpoint_every=0", "pretrain.checkpoint_every must be at least 1, got 0"),
    ("pretrain.batch_size=1", "pretrain.batch_size must be at least 2"),
    ("augment.views=1", "augment.views must be at least 2, got 1"),
    ("augment.crop_scale=[0, 1]", r"augment.crop_scale must be greater than 0 and at most 1, got \[0, 1\]"),
    ("pretrain.workers=-1", "pretrain.workers must be at least 0, got -1"),
    ("probe.epochs=-1", "probe.epochs must be at least 1, got -1"),
    ("probe.validation_fraction=2", "probe.validation_fraction must be at least 0 and below 1, got 2"),
    ("probe.validation_fraction=1", "probe.validation_fraction must be at least 0 and below 1"),
    ("retrieval.k=[1, 0]", r"retrieval.k must be at least 1, got \[1, 0\]"),
    ("detection.proposal_rule=xyz", "detection.proposal_rule must be one of threshold, smoothed"),
])
def test_every_value_is_checked_against_its_allowed_range(override, message):
    with pytest.raises(ConfigError, match=message):
        load_params(None, overrides=[override])


def test_allowed_values_pass_and_a_bad_value_in_a_file_names_the_file(tmp_path):
    params = load_params(None, overrides=["model.hidden_size=18", "model.num_heads=3", "pretrain.device=cuda:1",
                                          "probe.validation_fraction=0.2", "augment.crop_scale=[0.5, 1]"])
    assert params.model.num_heads == 3 and params.pretrain.device == "cuda:1"  # available or not: train.resolve_device
    path = tmp_path / "params.yaml"
    path.write_text("profiles:\n  small:\n    augment: {views: 1}\n")
    with pytest.raises(ConfigError, match=r"params.yaml \(profile small\): augment.views must be at least 2, got 1"):
        load_params(path, "small")


def test_a_binary_file_or_a_folder_as_params_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "folder").mkdir()
    for given, message in (("binary.yaml", "binary.yaml is not a text file (binary data)"),
                           ("folder", "params file folder is a folder")):
        with pytest.raises(ConfigError) as raised:
            load_params(given)  # relative: from tmp_path
        assert message in str(raised.value)
        code = main(["probe", "--data", "d", "--benchmark", "xsub", "--checkpoint", "random", "--out", "r.json",
                     "--params", given])
        error = capsys.readouterr().err
        assert code == 2 and message in error and len(error.strip().splitlines()) == 1


@pytest.mark.parametrize("override", ["model.hidden_size=0", "model.backbone=xyz", "loss.form=xyz",
                                      "probe.validation_fraction=2"])
def test_a_bad_setting_on_the_command_line_is_one_line_and_exit_2(override, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["pretrain", "--data", "d", "--benchmark", "xsub", "--out", "run", "--set", override])
    error = capsys.readouterr().err
    assert code == 2 and error.startswith(f"usdrl pretrain: error: --set {override}: ")
    assert len(error.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_a_layout_file_that_does_not_parse_is_one_line(tmp_path, capsys):
    from usdrl.skeleton import LayoutError, load_layout

    layout = tmp_path / "layout.yaml"
    layout.write_text("name: mine\njoint_names: [a, b\nbones: []\n")
    with pytest.raises(LayoutError) as raised:
        load_layout(layout)
    assert "could not be parsed" in str(raised.value) and "line 3" in str(raised.value)
    assert "\n" not in str(raised.value)
    binary = tmp_path / "layout.bin"
    binary.write_bytes(bytes(range(128, 256)))
    with pytest.raises(LayoutError, match="could not be parsed"):
        load_layout(binary)
    import numpy as np

    np.savez(tmp_path / "poses.npz", x=np.zeros((2, 3, 4, 25, 1), dtype=np.float32), label=np.array([0, 1]),
             split_xsub_train=np.array([0]), split_xsub_test=np.array([1]))
    assert main(["import", "arrays", str(tmp_path / "poses.npz"), "--out", str(tmp_path / "data"),
                 "--layout", str(layout)]) == 2
    error = capsys.readouterr().err
    assert "could not be parsed" in error and len(error.strip().splitlines()) == 1


def _sections(cls=Params, prefix=""):
    """Every settings section of Params, nested ones included, found from the dataclass type hints."""
    import typing

    for name, hint in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(hint):
            yield f"{prefix}{name}", hint
            yield from _sections(hint, f"{prefix}{name}.")


def test_a_typo_key_in_every_section_is_refused(tmp_path):
    sections = dict(_sections())
    assert {"data", "data.synthetic", "data.utkinect", "model", "ensemble", "pipeline"} <= set(sections)
    for dotted, cls in sections.items():
        field = dataclasses.fields(cls)[0].name
        typo = field[:-1] + ("x" if field[-1] != "x" else "y")
        with pytest.raises(ConfigError, match=f"unknown key '{dotted}.{typo}'"):
            load_params(None, overrides=[f"{dotted}.{typo}=1"])
        nested = {typo: 1}
        for part in reversed(dotted.split(".")):
            nested = {part: nested}
        path = tmp_path / "params.yaml"
        path.write_text(json.dumps(nested))  # JSON is YAML
        with pytest.raises(ConfigError, match=f"params.yaml: unknown key '{dotted}.{typo}'"):
            load_params(path)


def test_the_ensemble_section_has_one_weight_per_stream():
    assert load_params(None, overrides=["ensemble.streams=[joint, bone]", "ensemble.weights=[1, 2]"]).ensemble.weights \
        == (1.0, 2.0)
    with pytest.raises(ConfigError, match="ensemble.weights must hold one weight per stream of ensemble.streams"):
        load_params(None, overrides=["ensemble.weights=[1, 2]"])
